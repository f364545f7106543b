"""Gating of the Mixture-of-Logits head: pair weights pi(q, x) over the P = P_Q * P_X logits (spec §1.5-1.6).

Three partial networks produce P-dim gate logits: a query-only part from the raw query embedding, an
item-only part from the raw item embedding (query-independent, so it lives in the item state) and a
query-item part from the temperature-scaled component logits. They are combined ("glu_silu":
``SiLU(q * i + qi)``), turned into probabilities by a softmax, and in training dropped out and
renormalised. :func:`mutual_information_loss` is the load-balancing loss of spec §2.1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

GatingCombination = Literal["glu_silu", "glu_silu_ln", "none"]


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float, out_bias: bool) -> nn.Sequential:
    """Dropout -> Linear(in -> hidden) -> SiLU -> Linear(hidden -> out)."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_dim, hidden_dim),
        nn.SiLU(),
        nn.Linear(hidden_dim, out_dim, bias=out_bias),
    )


class MoLGating(nn.Module):
    """Gate logits s (B, X, P) from query-only, item-only and query-item parts.

    Args:
        query_dim: D_q (width of the raw query embedding).
        item_dim: D_x (width of the raw item embedding).
        num_pairs: P = P_Q * P_X.
        query_hidden_dim: hidden width of the query-only part (128).
        item_hidden_dim: hidden width of the item-only part (128).
        qi_hidden_dim: hidden width of the query-item part (128).
        item_dropout: input dropout of the item-only part (0.0).
        qi_dropout: input dropout of the query-item part (0.0; 0.1 for ML-20M).
        combination: "glu_silu" = SiLU(q*i + qi) (all paper configs); "glu_silu_ln" = g * sigmoid(LN(g))
            with g = q*i + qi; "none" = q + i + qi.
    """

    def __init__(
        self,
        query_dim: int,
        item_dim: int,
        num_pairs: int,
        query_hidden_dim: int = 128,
        item_hidden_dim: int = 128,
        qi_hidden_dim: int = 128,
        item_dropout: float = 0.0,
        qi_dropout: float = 0.0,
        combination: GatingCombination = "glu_silu",
    ) -> None:
        super().__init__()
        if combination not in ("glu_silu", "glu_silu_ln", "none"):
            raise ValueError(
                f"model.similarity.gating_combination must be 'glu_silu', 'glu_silu_ln' or 'none', "
                f"got {combination!r}"
            )
        for key, value in (
            ("gating_query_hidden_dim", query_hidden_dim),
            ("gating_item_hidden_dim", item_hidden_dim),
            ("gating_qi_hidden_dim", qi_hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"model.similarity.{key} must be >= 1, got {value}")
        self.combination = combination
        self.query_part = _mlp(query_dim, query_hidden_dim, num_pairs, 0.0, out_bias=False)
        self.item_part = _mlp(item_dim, item_hidden_dim, num_pairs, item_dropout, out_bias=False)
        self.qi_part = _mlp(num_pairs, qi_hidden_dim, num_pairs, qi_dropout, out_bias=True)
        self.norm = nn.LayerNorm(num_pairs) if combination == "glu_silu_ln" else None

    def bias_pair_(self, pair: int, bias: float) -> None:
        """Add ``bias`` to pair ``pair``'s gate logit (the query-item part's output bias; in place, no grad)."""
        with torch.no_grad():
            self.qi_part[3].bias[pair] += bias

    def query_gate(self, query_embeddings: Tensor) -> Tensor:
        """(B, D_q) raw queries -> (B, P) query-only part."""
        return self.query_part(query_embeddings)

    def item_gate(self, item_embeddings: Tensor) -> Tensor:
        """(*L, D_x) raw items -> (*L, P) item-only part."""
        return self.item_part(item_embeddings)

    def forward(self, query_gate: Tensor, item_gate: Tensor, logits: Tensor) -> Tensor:
        """Combine the parts into gate logits.

        Args:
            query_gate: (B, 1, P) query-only part.
            item_gate: (1|B, X, P) item-only part.
            logits: (B, X, P) temperature-scaled component logits.

        Returns:
            (B, X, P) gate logits (pre-softmax).
        """
        qi = self.qi_part(logits)
        if self.combination == "none":
            return query_gate + item_gate + qi
        g = torch.addcmul(qi, query_gate, item_gate)
        if self.norm is None:
            return nn.functional.silu(g)
        return g * torch.sigmoid(self.norm(g))


class SoftmaxDropoutMixer(nn.Module):
    """pi = softmax(s) over P; in training pi <- dropout(pi) / max(sum(dropout(pi)), eps) (spec §1.6).

    Args:
        dropout: softmax dropout rate (0.2 in every paper config).
        eps: renormalisation floor.
    """

    def __init__(self, dropout: float = 0.2, eps: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.similarity.softmax_dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.eps = eps

    def forward(self, gate_logits: Tensor) -> Tensor:
        """(..., P) gate logits -> (..., P) weights summing to 1 (up to eps when every pair is dropped)."""
        weights = torch.softmax(gate_logits, dim=-1)
        if self.training and self.dropout.p > 0:
            weights = self.dropout(weights)
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(self.eps)
        return weights


def mutual_information_loss(weights: Tensor, eps: float = 1e-6) -> Tensor:
    """Load-balancing loss -I(pair; example) = -H(marginal) + H(conditional) (spec §2.1).

    Args:
        weights: (..., P) gating probabilities (post-dropout, renormalised); leading dims are examples.
        eps: inside the logarithms.

    Returns:
        Scalar: ``sum_p u_p log(u_p + eps) - mean_examples sum_p pi_p log(pi_p + eps)`` with u the mean of pi.
    """
    flat = weights.float().reshape(-1, weights.shape[-1])  # (B*X, P)
    marginal = flat.mean(dim=0)
    marginal_entropy = -(marginal * torch.log(marginal + eps)).sum()
    conditional_entropy = -(flat * torch.log(flat + eps)).sum(dim=-1).mean()
    return conditional_entropy - marginal_entropy
