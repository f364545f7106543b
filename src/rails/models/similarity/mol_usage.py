"""How a trained MoL head uses its pairs: the gating weights of (query, item) pairs and their summary.

A diagnostic of the mixture (``scripts/mol_pair_usage.py``): whether the gating spreads its weight over the
P = P_Q * P_X pairs or leans on a few, e.g. on pair 0 of a head with ``identity_components`` (the dot head's
cosine logit); and, for ``residual_components``, how far the learned maps moved the components from the
embeddings they started as (:func:`residual_deviation`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.mol_components import (
    ItemComponentProjection,
    QueryComponentMLP,
    learned_components,
    pair_logits,
)
from rails.models.similarity.states import MoLItemState, MoLQueryState


def pair_weights(
    head: MoLSimilarity, query_state: MoLQueryState, item_state: MoLItemState
) -> tuple[Tensor, Tensor]:
    """Gating weights pi and pair logits, both (B, X, P), of queries (B, ...) with items (X, ...) shared by
    every query or (B, X, ...) per query; pi without softmax dropout (eval), summing to 1 over P."""
    dtype = next(head.gating.parameters()).dtype  # bf16 item caches of a float32 head: the head's dtype
    logits = pair_logits(query_state.components.to(dtype), item_state.components.to(dtype), head.temperature)
    gate_logits = head.gating(query_state.gate[:, None, :].to(dtype), item_state.gate.to(dtype), logits)
    weight_dtype = torch.promote_types(dtype, torch.float32)  # bf16 heads: the weights in float32
    return torch.softmax(gate_logits, dim=-1, dtype=weight_dtype), logits


@dataclass(frozen=True)
class PairUsage:
    """Summary of (B, X, P) gating weights.

    Attributes:
        num_pairs: P.
        mean_weight: (P,) mean of pi_p over the (query, item) pairs.
        top_pair_rate: (P,) share of (query, item) pairs whose largest weight is pair p.
        effective_pairs: mean of exp(entropy of pi) (1: one pair carries all weight; P: uniform).
    """

    num_pairs: int
    mean_weight: list[float]
    top_pair_rate: list[float]
    effective_pairs: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summarise_pair_usage(weights: Tensor, eps: float = 1e-12) -> PairUsage:
    """(..., P) gating weights (each row sums to 1) -> :class:`PairUsage`."""
    flat = weights.detach().double().reshape(-1, weights.shape[-1])
    if flat.shape[0] == 0:
        raise ValueError("summarise_pair_usage needs at least one (query, item) pair")
    num_pairs = flat.shape[1]
    entropy = -(flat * torch.log(flat.clamp_min(eps))).sum(dim=-1)
    top = torch.bincount(flat.argmax(dim=-1), minlength=num_pairs).double() / flat.shape[0]
    return PairUsage(
        num_pairs=num_pairs,
        mean_weight=flat.mean(dim=0).tolist(),
        top_pair_rate=top.tolist(),
        effective_pairs=float(entropy.exp().mean()),
    )


def _residual_map(components: nn.Module) -> QueryComponentMLP | ItemComponentProjection | None:
    inner, _ = learned_components(components)
    if isinstance(inner, (QueryComponentMLP, ItemComponentProjection)) and inner.residual:
        return inner
    return None


@torch.no_grad()
def residual_deviation(
    head: MoLSimilarity, query_embeddings: Tensor, item_embeddings: Tensor
) -> dict[str, dict[str, float]] | None:
    """How far residual components moved from the embeddings they started as (None: no residual components).

    For each side, over its (N, D) embeddings e and learned components c_j = e + delta_j(e) (eval mode):
    ``relative_norm`` = mean ||delta_j(e)|| / ||e||, ``cosine`` = mean cos(c_j, e) (1: still the dot head).
    """
    sides = {
        "query": (head.query_components, query_embeddings),
        "item": (head.item_components, item_embeddings),
    }
    found = {}
    for side, (components, embeddings) in sides.items():
        module = _residual_map(components)
        if module is None:
            continue
        was_training = module.training
        module.eval()
        e = embeddings.to(next(module.parameters()).dtype)
        full = module(e)  # (N, P, D): e + delta
        module.train(was_training)
        delta = full - e[:, None, :]
        norms = torch.linalg.vector_norm(e, dim=-1).clamp_min(head.eps)[:, None]
        found[side] = {
            "relative_norm": float((torch.linalg.vector_norm(delta, dim=-1) / norms).mean()),
            "cosine": float(
                nn.functional.cosine_similarity(full, e[:, None, :].expand_as(full), dim=-1).mean()
            ),
        }
    return found or None
