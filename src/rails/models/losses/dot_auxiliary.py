"""Auxiliary dot-product loss: the sampled softmax a dot head would train with, beside a learned head.

A learned similarity (MoL) reaches the item table only through its learned maps. On sparse data (Amazon
Beauty: 16 interactions per item) the item table and the encoder learn best when the loss reaches them
directly, as the dot head's cosine of the raw embeddings does (docs/mol_investigation.md §0.8-0.11). This loss
adds that signal: the same positives, negatives and collision mask as the head's loss, scored by the cosine of
the encoder's query and the raw item embedding. The learned head alone ranks at evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from rails.checks import require
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.similarity.base import l2_normalize


class DotAuxiliaryLoss(nn.Module):
    """Sampled softmax of cos(query, item) / ``temperature`` (spec §3.2's loss on the dot head's scores).

    Args:
        temperature: tau of the cosine logits (0.05, the dot head's in every paper config).
        eps: L2-normalisation epsilon.
    """

    def __init__(self, temperature: float = 0.05, eps: float = 1e-6) -> None:
        super().__init__()
        self.check_args(locals())
        self.loss = SampledSoftmaxLoss(temperature=temperature)
        self.eps = eps

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        value = args["temperature"]
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
            "temperature",
            value,
            "must be a number > 0",
        )

    def sampled(self, queries: Tensor, item_embeddings: Tensor, rows: Tensor, collisions: Tensor) -> Tensor:
        """Each query against its own rows of one item table.

        Args:
            queries: (M, D) encoder outputs.
            item_embeddings: (T, D) raw item embeddings of the step.
            rows: (M, 1 + R) int64 rows of ``item_embeddings`` per query; column 0 is the positive.
            collisions: (M, R) bool, True where a negative is the query's positive (masked out).

        Returns:
            Scalar loss.
        """
        self._check_widths(queries, item_embeddings)
        query = l2_normalize(queries, self.eps)  # (M, D)
        items = l2_normalize(item_embeddings, self.eps)[rows].to(query.dtype)  # (M, 1 + R, D)
        scores = (items @ query[:, :, None]).squeeze(-1)  # (M, 1 + R)
        return self.loss.joint(scores, collisions=collisions)

    def shared(
        self, queries: Tensor, positive_embeddings: Tensor, negative_embeddings: Tensor, collisions: Tensor
    ) -> Tensor:
        """Every query against one shared negative set.

        Args:
            queries: (M, D) encoder outputs.
            positive_embeddings: (M, D) each query's positive item.
            negative_embeddings: (R, D) the negatives shared by every query.
            collisions: (M, R) bool, True where a negative is the query's positive (masked out).

        Returns:
            Scalar loss.
        """
        self._check_widths(queries, negative_embeddings)
        query = l2_normalize(queries, self.eps)
        positives = l2_normalize(positive_embeddings, self.eps).to(query.dtype)
        negatives = l2_normalize(negative_embeddings, self.eps).to(query.dtype)
        return self.loss((query * positives).sum(-1), query @ negatives.T, collisions=collisions)

    @staticmethod
    def _check_widths(queries: Tensor, items: Tensor) -> None:
        if queries.shape[-1] != items.shape[-1]:
            raise ValueError(
                f"dot_loss_weight > 0 needs queries and items of one width: got {queries.shape[-1]} and "
                f"{items.shape[-1]} (set model.dot_loss_weight=0 for this encoder and head)"
            )

    def extra_repr(self) -> str:
        return f"temperature={self.loss.temperature}"
