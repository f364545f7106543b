"""Negative samplers of the sampled-softmax loss (spec §3.3 and two common alternatives).

Every sampler is called once per training step with the number of supervised positions M, the candidate
corpus and the positives of the step, and returns either

* per-position negatives, an (M, R) id tensor (:class:`UniformNegatives`, the paper's "local" sampler, and
  :class:`InBatchNegatives`, the reference's unused "in-batch" sampler), or
* negatives shared by every position of the step, an (R,) id tensor (:class:`SharedNegatives`; with
  ``num_negatives: null`` the whole corpus, i.e. a full softmax), which the retrieval module scores as one
  (M, R) matrix instead of gathering R item rows per position.

``shared`` tells the two apart. Negatives equal to a position's positive are masked by the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rails.checks import require, require_at_least


class NegativeSampler(nn.Module):
    """Base class: ``forward(num_rows, corpus_ids, positives) -> (M, R) or shared (R,) ids``.

    Attributes:
        shared: True when the sampler returns one (R,) set for every position of the step.
    """

    shared: bool = False

    def forward(self, num_rows: int, corpus_ids: Tensor, positives: Tensor | None = None) -> Tensor:
        """Negatives for ``num_rows`` positions.

        Args:
            num_rows: M, supervised positions of the step.
            corpus_ids: (X,) int64 candidate corpus (the negative pool).
            positives: (M,) int64 positive id of each position (used by :class:`InBatchNegatives`).
        """
        raise NotImplementedError


def _check_pool(corpus_ids: Tensor) -> None:
    if corpus_ids.numel() == 0:
        raise ValueError("cannot sample negatives from an empty corpus")


class _PerPositionSampler(NegativeSampler):
    """Samplers returning R ids per position: the ``num_negatives`` argument, its rule and its repr."""

    def __init__(self, num_negatives: int = 128) -> None:
        super().__init__()
        self.check_args(locals())
        self.num_negatives = num_negatives

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        require_at_least(args, 1, "num_negatives")

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}"


class UniformNegatives(_PerPositionSampler):
    """R ids per positive drawn uniformly with replacement from the candidate corpus ("local" sampler).

    Args:
        num_negatives: R (128 for MovieLens, 512 for Amazon Books in the paper).
    """

    def forward(self, num_rows: int, corpus_ids: Tensor, positives: Tensor | None = None) -> Tensor:
        """(X,) corpus ids -> (num_rows, R) sampled ids."""
        _check_pool(corpus_ids)
        picks = torch.randint(0, corpus_ids.numel(), (num_rows, self.num_negatives), device=corpus_ids.device)
        return corpus_ids[picks]


class InBatchNegatives(_PerPositionSampler):
    """R ids per positive drawn uniformly with replacement from the step's distinct positives (spec §3.3).

    The reference's "in-batch" sampler: the pool is the set of distinct positive ids of the step (not
    frequency-weighted), so popular items are not over-sampled and items absent from the step are never
    negatives. The corpus is not used.

    Args:
        num_negatives: R per position.
    """

    def forward(self, num_rows: int, corpus_ids: Tensor, positives: Tensor | None = None) -> Tensor:
        """(M,) positives -> (num_rows, R) ids drawn from their distinct values."""
        if positives is None or positives.numel() == 0:
            raise ValueError("InBatchNegatives needs the positives of the step (none were given)")
        pool = positives.unique()
        picks = torch.randint(0, pool.numel(), (num_rows, self.num_negatives), device=pool.device)
        return pool[picks]


class SharedNegatives(NegativeSampler):
    """One set of R distinct corpus ids per step, shared by every position; ``None`` = the whole corpus.

    Sharing makes many negatives cheap (one (M, D) x (D, R) product for a dot-product head instead of an
    (M, R, D) gather), and ``num_negatives=None`` gives the full softmax over the candidate corpus.

    Args:
        num_negatives: R, drawn uniformly without replacement each step; None = every corpus item.
    """

    shared = True

    def __init__(self, num_negatives: int | None = 1024) -> None:
        super().__init__()
        self.check_args(locals())
        self.num_negatives = num_negatives

    @staticmethod
    def check_args(args: Mapping[str, Any]) -> None:
        """Argument rules (see :func:`rails.config.check_config`)."""
        value = args["num_negatives"]
        require(
            value is None or (isinstance(value, int) and value >= 1),
            "num_negatives",
            value,
            "must be an integer >= 1, or null for the whole corpus",
        )

    def forward(self, num_rows: int, corpus_ids: Tensor, positives: Tensor | None = None) -> Tensor:
        """(X,) corpus ids -> (R,) distinct ids shared by the ``num_rows`` positions."""
        _check_pool(corpus_ids)
        if self.num_negatives is None:
            return corpus_ids
        if self.num_negatives > corpus_ids.numel():
            raise ValueError(
                f"model.negatives.num_negatives={self.num_negatives} exceeds the corpus size "
                f"{corpus_ids.numel()} (shared negatives are drawn without replacement; use null for the "
                "whole corpus)"
            )
        picks = torch.randperm(corpus_ids.numel(), device=corpus_ids.device)[: self.num_negatives]
        return corpus_ids[picks]

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives or 'all'}"
