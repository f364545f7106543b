"""Sampled softmax over one positive and R negatives (spec §3.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require

COLLISION_LOGIT = -5.0e4  # written after the temperature so it fits bf16/fp16 (spec §3.2)


class SampledSoftmaxLoss(nn.Module):
    """l = -log softmax([s+, s-_1..R] / tau)[0], negatives equal to the positive masked out.

    Args:
        temperature: tau; 0.05 for L2-normalised dot products, 1.0 for MoL (which has its own 0.05). None =
            the similarity head's ``loss_temperature``, set by the retrieval module that owns both.
    """

    def __init__(self, temperature: float | None = None) -> None:
        super().__init__()
        self.check_args(locals())
        self.temperature = temperature

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        value = args["temperature"]
        require(value is None or value > 0, "temperature", value, "must be > 0 (or null: the head's)")

    def forward(
        self,
        positive_scores: Tensor,
        negative_scores: Tensor,
        collisions: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Weighted mean loss.

        Args:
            positive_scores: (M,) similarity of each query with its positive.
            negative_scores: (M, R) similarity with each negative.
            collisions: (M, R) bool, True where the negative is the positive item (masked out).
            weights: (M,) optional per-row weights.

        Returns:
            Scalar loss.
        """
        return self.joint(torch.cat([positive_scores[:, None], negative_scores], dim=1), collisions, weights)

    def joint(
        self, scores: Tensor, collisions: Tensor | None = None, weights: Tensor | None = None
    ) -> Tensor:
        """:meth:`forward` on (M, 1 + R) scores whose column 0 is the positive (no concatenation).

        Args:
            scores: (M, 1 + R) similarity with the positive (column 0) and each negative.
            collisions: (M, R) bool, True where the negative is the positive item (masked out).
            weights: (M,) optional per-row weights.
        """
        if self.temperature is None:
            raise RuntimeError(
                "SampledSoftmaxLoss.temperature is None: give it explicitly, or use the loss inside a retrieval "
                "module, which sets the similarity head's loss_temperature"
            )
        logits = scores.float() / self.temperature
        if collisions is not None:  # the mask is written after the temperature (spec §3.2)
            logits = logits.masked_fill(nn.functional.pad(collisions, (1, 0)), COLLISION_LOGIT)
        per_row = -torch.log_softmax(logits, dim=1)[:, 0]
        if weights is None:
            return per_row.mean()
        return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
