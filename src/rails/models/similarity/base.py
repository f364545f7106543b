"""The similarity-head contract every head (dot product, Mixture-of-Logits, ...) implements.

A head turns encoder outputs into *states* and scores them. States are typed tensor containers
(:mod:`rails.models.similarity.states`) whose leading dimensions index queries or items, so indexes can
chunk, gather, shard and cache them without knowing the head:

- ``encode_queries(query_embeddings (B, D_q), **ctx) -> query_state``: a :class:`HeadState`, leading dim B.
  ``ctx`` carries side inputs such as ``user_ids`` (B,) for MoL user-id components.
- ``encode_items(item_embeddings (*L, D_x)) -> item_state``: a :class:`HeadState`, leading dims ``*L``
  ((X,) for a shared corpus, (B, X) for per-query candidates). Everything about an item that does not
  depend on the query (normalised embedding, MoL item components, MoL item-side gating) belongs here,
  so an index computes it once per evaluation.
- ``score(query_state, item_state (X, ...)) -> (B, X)``: every query against a shared item set.
- ``score_pairs(query_state, item_state (B, X, ...)) -> (B, X)``: each query against its own items
  (sampled negatives in training; re-scoring approximate top-k candidates).
- ``forward(query_embeddings (B, D_q), item_embeddings (X, D_x) | (B, X, D_x), **ctx) ->
  SimilarityOutput(scores (B, X), aux_losses)``: the training path; auxiliary losses (e.g. MoL's
  mutual-information load balancing) are returned by name, unweighted, and only in training mode.

Scores are logits before the loss temperature; heads keep their own internal temperatures.

Training recipe: a head also declares how it is trained, so that choosing a head is a self-contained choice
(``model/similarity=mol`` works with any encoder and no other override). The retrieval modules read
``loss_temperature`` (the sampled-softmax temperature its scores need), ``query_norm`` (the encoder output
normalisation it expects) and ``aux_loss_weights`` (the weight of each auxiliary loss it returns) from the
head, unless the loss / encoder / module was given an explicit value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from rails.checks import require, require_positive
from rails.models.encoders.base import OUTPUT_NORMS, OutputNorm
from rails.models.similarity.states import HeadState


class SimilarityOutput(NamedTuple):
    """Scores (B, X) and named, unweighted auxiliary losses (empty outside training)."""

    scores: Tensor
    aux_losses: dict[str, Tensor]


class SimilarityHead(nn.Module, ABC):
    """Abstract similarity head; see the module docstring for the contract, shapes and training recipe.

    Args:
        loss_temperature: sampled-softmax temperature for this head's scores (1.0: scores are logits).
        query_norm: encoder output normalisation this head expects ("l2" | "layer_norm" | "none").
    """

    aux_loss_names: ClassVar[tuple[str, ...]] = ()
    """Every auxiliary loss this head class can return (none by default)."""

    def __init__(self, loss_temperature: float = 1.0, query_norm: OutputNorm = "none") -> None:
        super().__init__()
        self.loss_temperature = loss_temperature
        self.query_norm: OutputNorm = query_norm

    @staticmethod
    def check_recipe(args: Mapping[str, Any]) -> None:
        """Argument rules of the training recipe (``loss_temperature``, ``query_norm``)."""
        require_positive(args, "loss_temperature")
        require(
            args["query_norm"] in OUTPUT_NORMS,
            "query_norm",
            args["query_norm"],
            f"must be one of {OUTPUT_NORMS}",
        )

    @property
    def aux_loss_weights(self) -> dict[str, float]:
        """Weight of each auxiliary loss this instance returns in training (none by default)."""
        return {}

    @abstractmethod
    def encode_queries(self, query_embeddings: Tensor, **ctx: Tensor) -> HeadState:
        """(B, D_q) encoder outputs -> query state with leading dim B."""

    @abstractmethod
    def encode_items(self, item_embeddings: Tensor) -> HeadState:
        """(*L, D_x) item embeddings -> item state with leading dims *L."""

    @abstractmethod
    def score(self, query_state: HeadState, item_state: HeadState) -> Tensor:
        """All pairs: query state (B, ...) x item state (X, ...) -> (B, X)."""

    @abstractmethod
    def score_pairs(self, query_state: HeadState, item_state: HeadState) -> Tensor:
        """Per-query items: query state (B, ...) x item state (B, X, ...) -> (B, X)."""

    def forward(self, query_embeddings: Tensor, item_embeddings: Tensor, **ctx: Tensor) -> SimilarityOutput:
        """Training path: (B, D_q) x (X, D_x) or (B, X, D_x) -> SimilarityOutput((B, X), aux_losses)."""
        query_state = self.encode_queries(query_embeddings, **ctx)
        item_state = self.encode_items(item_embeddings)
        if item_embeddings.dim() == 2:
            return SimilarityOutput(self.score(query_state, item_state), {})
        if item_embeddings.dim() == 3:
            return SimilarityOutput(self.score_pairs(query_state, item_state), {})
        raise ValueError(
            f"item_embeddings must be (X, D) or (B, X, D), got shape {tuple(item_embeddings.shape)}"
        )

    def forward_state(
        self, query_embeddings: Tensor, item_state: HeadState, **ctx: Tensor
    ) -> SimilarityOutput:
        """Training path from a precomputed per-query item state (B, X, ...) -> SimilarityOutput((B, X), aux).

        Lets the caller encode each distinct sampled item once (``encode_items`` on unique ids, then
        ``item_state.gather``) instead of once per occurrence. Heads with auxiliary losses override this.
        """
        return SimilarityOutput(
            self.score_pairs(self.encode_queries(query_embeddings, **ctx), item_state), {}
        )

    def forward_sampled(
        self, query_embeddings: Tensor, item_embeddings: Tensor, positions: Tensor, **ctx: Tensor
    ) -> SimilarityOutput:
        """Sampled-softmax training path: each query against its own rows of one item table, in one call.

        Args:
            query_embeddings: (M, D_q) queries.
            item_embeddings: (T, D_x) item table of the step (e.g. the distinct negatives, then one row per
                query for its positive); each row is encoded once.
            positions: (M, 1 + R) int64 rows of ``item_embeddings`` per query; column 0 is the positive.
            **ctx: query context (``user_ids`` (M,) ...).

        Returns:
            SimilarityOutput((M, 1 + R) scores, aux losses). Equal in distribution to the two calls of
            spec §3.2 (positive, then negatives): auxiliary losses come from column 0 only, and every
            dropout of the query side is drawn once per column group. Heads with auxiliary losses or
            query-side dropout override this.
        """
        item_state = self.encode_items(item_embeddings).gather(positions)
        return SimilarityOutput(
            self.score_pairs(self.encode_queries(query_embeddings, **ctx), item_state), {}
        )

    def extra_repr(self) -> str:
        return ""


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / max(||x||_2, eps) along the last dimension."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)
