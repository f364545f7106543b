"""Negative samplers (spec §3.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require_at_least


class UniformNegatives(nn.Module):
    """R ids per positive drawn uniformly with replacement from the candidate corpus ("local" sampler).

    Args:
        num_negatives: R (128 for MovieLens, 512 for Amazon Books in the paper).
    """

    def __init__(self, num_negatives: int = 128) -> None:
        super().__init__()
        self.check_args(locals())
        self.num_negatives = num_negatives

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        require_at_least(args, 1, "num_negatives")

    def forward(self, num_rows: int, corpus_ids: Tensor) -> Tensor:
        """(X,) corpus ids -> (num_rows, R) sampled ids."""
        if corpus_ids.numel() == 0:
            raise ValueError("cannot sample negatives from an empty corpus")
        picks = torch.randint(0, corpus_ids.numel(), (num_rows, self.num_negatives), device=corpus_ids.device)
        return corpus_ids[picks]

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}"
