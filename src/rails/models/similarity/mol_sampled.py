"""The Mixture-of-Logits sampled-softmax training step as one head call (spec §3.2).

The reference scores each query's positive (X = 1) and its R negatives (X = R) in two head calls. Here one
call scores the (M, 1 + R) columns and is equal in distribution to the two calls:

- the query side is computed once (query component MLP, user-id lookup, query gate); where the query side
  has dropout in training (user-id components, an input dropout of the query component function), the
  positive column and the negative columns each get their own draw, as in two calls;
- gating, softmax, softmax dropout (drawn per element) and the mixture run once over (M, 1 + R, P);
- ``mi_loss`` comes from column 0 (the positive call's post-dropout weights), ``uid_embedding_l2_norm`` from
  the pre-dropout user-id vectors (the same in both calls).

Item side ("smarter negative encoding"): with the default item projection (Linear W, b, then L2
normalisation per component) the logits factor as

    <f_i, g_j(x)> / tau = (f_i^T [W_j | b_j] / tau) . [x', 1] / max(||W_j x' + b_j||, eps)

(x' the item embedding after the item dropout), so each sampled (query, item) pair needs only the item's
(D + 1) row ``[x', 1]`` and its P_X inverse norms, not its (P_X, d_P) components: the (M, 1 + R, P_X, d_P)
gather (8x the logits at 8x4x64) and its scatter-add backward disappear, and the query side carries
``A = f^T [W | b] / tau`` (M, P, D + 1). With identity components (component 0 = the raw embedding x, no
dropout) the row grows to ``[x', 1, x]`` (2D + 1; ``[x, 1]`` when the item dropout is off) and component 0's
factor is ``[0 | 0 | I]``. Residual components (``g_j = x + W_j x' + b_j``) use the same rows with factors
``[W_j | b_j | I]`` (``[W_j + I | b_j]`` on rows ``[x, 1]``). Replacement item component functions take the
generic path (``encode_items``, then a gather of the components).

Each pair's item-side values (row, inverse norms, item gate part) sit side by side in one (T, C) table and
are gathered in one indexing op (:func:`gather_sampled`): one gather and one sort-based scatter-add in the
backward instead of three of each per step (a launch-bound step at ML-1M shapes: issue #13 item 4).

Many negatives: with the head's ``sampled_checkpoint_columns`` > 0, :func:`score_columns` scores the columns in
chunks under activation checkpointing, so a step holds the pair activations of one chunk at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from rails.models.similarity.base import SimilarityOutput
from rails.models.similarity.mol_components import (
    ItemComponentProjection,
    learned_components,
    pair_logits,
)
from rails.models.similarity.mol_gating import mutual_information_loss

if TYPE_CHECKING:
    from rails.models.similarity.mol import MoLSimilarity


class SampledItems(NamedTuple):
    """The item table of one training step, encoded once, or its rows gathered per (query, item) pair.

    Attributes (leading dims ``(T,)`` for the table, ``(M, X)`` once gathered):
        rows: (..., D_x + 1) ``[x', 1]`` (factorised path; ``[x', 1, x]`` (..., 2 D_x + 1) with identity
            components and item dropout) or (..., P_X, d_P) L2-normalised components.
        inv_norms: (..., P_X) ``1 / max(||W_j x' + b_j||, eps)`` (factorised path; ``1 / max(||x||, eps)`` for an
            identity component 0) or None.
        gate: (..., P) item-only gating part.
    """

    rows: Tensor
    inv_norms: Tensor | None
    gate: Tensor


def gather_sampled(items: SampledItems, positions: Tensor, dtype: torch.dtype | None = None) -> SampledItems:
    """Table rows (T, ...) -> their values at ``positions`` (M, X), every field in one indexing op.

    The fields are laid side by side in ``dtype`` (default: that of ``rows``) and gathered once; the result's
    fields are views. ``dtype`` is the one the pair logits and the gating compute in (bf16 under the head's
    autocast), into which every field would be cast after the gather anyway: casting the (T, C) table first
    moves half the bytes and saves the (M, X, C) casts.
    """
    dtype = dtype or items.rows.dtype
    fields = [items.rows.flatten(1).to(dtype), items.gate.to(dtype)]
    if items.inv_norms is not None:
        fields.append(items.inv_norms.to(dtype))
    widths = [f.shape[1] for f in fields]
    gathered = torch.cat(fields, dim=1)[positions].split(widths, dim=-1)  # (M, X, C) -> views
    rows = gathered[0].unflatten(-1, items.rows.shape[1:])
    inv_norms = gathered[2] if items.inv_norms is not None else None
    return SampledItems(rows, inv_norms, gathered[1])


def _projection(head: MoLSimilarity) -> tuple[ItemComponentProjection, bool] | None:
    """The default item projection the logits factor through (Linear with bias, then L2 normalisation) and
    whether an identity component 0 precedes it; None: the generic path."""
    projection, identity = learned_components(head.item_components)
    if type(projection) is ItemComponentProjection and projection.proj.bias is not None:
        return projection, identity
    return None


def encode_sampled_items(head: MoLSimilarity, item_embeddings: Tensor) -> SampledItems:
    """(T, D_x) item table -> :class:`SampledItems` (item dropout drawn once per row)."""
    if item_embeddings.dim() != 2:
        raise ValueError(f"item_embeddings must be (T, D_x), got shape {tuple(item_embeddings.shape)}")
    found = _projection(head)
    if found is None:
        state = head.encode_items(item_embeddings)
        return SampledItems(state.components, None, state.gate)
    projection, identity = found
    dropped = projection.dropout(item_embeddings)
    raw = projection.proj(dropped).unflatten(-1, (projection.num_components, head.component_dim))
    if projection.residual:
        raw = raw + item_embeddings.unsqueeze(-2).to(raw.dtype)
    inv_norms = torch.linalg.vector_norm(raw, dim=-1).clamp_min(head.eps).reciprocal()
    rows = [dropped, dropped.new_ones(dropped.shape[0], 1)]
    if identity:
        own = torch.linalg.vector_norm(item_embeddings, dim=-1, keepdim=True).clamp_min(head.eps).reciprocal()
        inv_norms = torch.cat([own.to(inv_norms.dtype), inv_norms], dim=-1)
    if (identity or projection.residual) and projection.dropout.training and projection.dropout.p > 0:
        rows.append(item_embeddings)  # the undropped x; without dropout x' = x: rows [x, 1] serve both
    return SampledItems(torch.cat(rows, dim=-1), inv_norms, head.gating.item_gate(item_embeddings))


def _item_factors(head: MoLSimilarity, width: int) -> Tensor:
    """(P_X, d_P, width) factors F_j with raw component j = F_j . row (rows of ``width`` = D + 1 or 2 D + 1)."""
    found = _projection(head)
    assert found is not None
    projection, identity = found
    proj = projection.proj
    p_x, d_p = projection.num_components, head.component_dim
    factors = torch.cat([proj.weight.view(p_x, d_p, -1), proj.bias.view(p_x, d_p, 1)], dim=-1)
    if not (identity or projection.residual):
        return factors
    eye = torch.eye(d_p, dtype=factors.dtype, device=factors.device)
    if width == factors.shape[-1]:  # rows [x, 1]: the identity reads x itself
        own = torch.cat([eye, eye.new_zeros(d_p, 1)], dim=-1)
    else:  # rows [x', 1, x]
        factors = torch.cat([factors, factors.new_zeros(p_x, d_p, d_p)], dim=-1)
        own = torch.cat([eye.new_zeros(d_p, d_p + 1), eye], dim=-1)
    if projection.residual:
        factors = factors + own
    return torch.cat([own[None], factors], dim=0) if identity else factors


def sampled_logits(head: MoLSimilarity, query_components: Tensor, pairs: SampledItems) -> Tensor:
    """Temperature-scaled pair logits (M, X, P) of queries (M, P_Q, d_P) with their gathered items ``pairs``."""
    if pairs.inv_norms is None:
        return pair_logits(query_components, pairs.rows, head.temperature)  # rows: (M, X, P_X, d_P)
    p_x = head.num_item_components
    weight = _item_factors(head, pairs.rows.shape[-1])
    per_query = torch.einsum("mid,jdk->mijk", query_components, weight / head.temperature)
    per_query = per_query.flatten(1, 2)  # (M, P, row width)
    dots = torch.bmm(pairs.rows.to(per_query.dtype), per_query.transpose(1, 2))  # (M, X, P)
    inv_norms = pairs.inv_norms.to(dots.dtype)  # (M, X, P_X)
    return (dots.unflatten(-1, (head.num_query_components, p_x)) * inv_norms[:, :, None, :]).flatten(-2)


def mix_sampled(
    head: MoLSimilarity, query_gate: Tensor, item_gate: Tensor, logits: Tensor
) -> tuple[Tensor, Tensor]:
    """Scores (M, X) and the positive column's weights (M, 1, P) from gating parts and logits (M, X, P).

    The mixture of :meth:`MoLSimilarity._mix_logits` with the renormalisation folded into the score:
    ``sum_p (pi'_p / S) L_p = (sum_p pi'_p L_p) / S`` with ``S = max(sum_p pi'_p, eps)``, so the (M, X, P)
    weights are never divided (only the positive column's, for ``mi_loss``).
    """
    gate_logits = head.gating(query_gate[:, None, :], item_gate.to(logits.dtype), logits)
    weights = torch.softmax(gate_logits, dim=-1)
    mixer = head.mixer
    if not (mixer.training and mixer.dropout.p > 0):
        return (weights.to(logits.dtype) * logits).sum(dim=-1), weights[:, :1]
    weights = mixer.dropout(weights)
    kept = weights.sum(dim=-1, keepdim=True).clamp_min(mixer.eps)  # (M, X, 1)
    scores = (weights.to(logits.dtype) * logits).sum(dim=-1) / kept[..., 0].to(logits.dtype)
    return scores, weights[:, :1] / kept[:, :1]


def score_columns(
    head: MoLSimilarity,
    items: SampledItems,
    positions: Tensor,
    query_gate: Tensor,
    components: Tensor,
    positive_components: Tensor | None,
    checkpoint_columns: int = 0,
) -> tuple[Tensor, Tensor]:
    """Scores (M, X) of the sampled columns ``positions`` (M, X) and the first column's weights (M, 1, P).

    ``items``: the step's (T, ...) table; ``components`` (M, P_Q, d_P) score every column, except the first
    when ``positive_components`` (the positive column's own query-side dropout draw) is given.

    ``checkpoint_columns`` > 0 (with autograd): ``checkpoint_columns`` columns at a time, each chunk under
    activation checkpointing. A chunk's (M, chunk, ...) gathered rows, logits, gating activations and weights
    live only while it is scored and again while its backward recomputes them (dropout replays its draws: the
    RNG state is saved per chunk): memory for M x chunk pairs instead of M x X, for about one more forward of
    the pair scoring. Columns are scored independently, so the scores are those of one call.
    """
    num_columns = positions.shape[1]
    if 0 < checkpoint_columns < num_columns and torch.is_grad_enabled():
        parts = [
            torch.utils.checkpoint.checkpoint(
                score_columns,
                head,
                items,
                positions[:, start : start + checkpoint_columns],
                query_gate,
                components,
                positive_components if start == 0 else None,
                use_reentrant=False,
            )
            for start in range(0, num_columns, checkpoint_columns)
        ]
        return torch.cat([scores for scores, _ in parts], dim=1), parts[0][1]
    pairs = gather_sampled(items, positions, components.dtype)  # fields (M, X, ...)
    if positive_components is None:
        logits = sampled_logits(head, components, pairs)
    else:
        logits = sampled_logits(head, positive_components, SampledItems(*(_columns(f, 0, 1) for f in pairs)))
        if num_columns > 1:
            negatives = SampledItems(*(_columns(f, 1, None) for f in pairs))
            logits = torch.cat([logits, sampled_logits(head, components, negatives)], dim=1)
    return head._sampled_mix_fn(head, query_gate, pairs.gate, logits)


def _columns(field: Tensor | None, start: int, stop: int | None) -> Tensor | None:
    return field[:, start:stop] if field is not None else None


def _has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def forward_sampled(
    head: MoLSimilarity,
    query_embeddings: Tensor,
    item_embeddings: Tensor,
    positions: Tensor,
    user_ids: Tensor | None,
) -> SimilarityOutput:
    """[positive | R negatives] scores of every query in one call (see the module docstring).

    Args:
        head: the MoL head.
        query_embeddings: (M, D_q).
        item_embeddings: (T, D_x) item table of the step; each row is encoded once.
        positions: (M, 1 + R) int64 rows of ``item_embeddings``; column 0 is each query's positive.
        user_ids: (M,) for the user-id components, else None.

    Returns:
        SimilarityOutput((M, 1 + R) scores, ``mi_loss`` of column 0 and ``uid_embedding_l2_norm`` in training).
    """
    if positions.dim() != 2 or positions.shape[0] != query_embeddings.shape[0] or positions.shape[1] < 1:
        raise ValueError(
            f"positions must be (M, 1 + R) with M = {query_embeddings.shape[0]} queries, "
            f"got shape {tuple(positions.shape)}"
        )
    with head._precision(query_embeddings):
        components, uid, squared_uid_norms = head._query_inputs(query_embeddings, user_ids)
        query_gate = head.gating.query_gate(query_embeddings)
        negative_components = head._query_components(components, uid)
        items = encode_sampled_items(head, item_embeddings)
        query_dropout = _has_dropout(head.query_components)
        uid_dropout = (
            uid is not None and head.uid_components is not None and _has_dropout(head.uid_components)
        )
        positive_components = None
        if head.training and positions.shape[1] > 1 and (query_dropout or uid_dropout):
            # the positive column gets its own query-side dropout draw, as in a separate call
            if query_dropout:
                components, _, _ = head._query_inputs(query_embeddings, user_ids)
            positive_components = head._query_components(components, uid)
        scores, positive_weights = score_columns(
            head, items, positions, query_gate, negative_components, positive_components,
            head.sampled_checkpoint_columns,
        )  # fmt: skip
    aux: dict[str, Tensor] = {}
    if head.training:
        aux["mi_loss"] = mutual_information_loss(positive_weights, head.eps)
        if squared_uid_norms is not None:
            aux["uid_embedding_l2_norm"] = squared_uid_norms.float().mean()
    return SimilarityOutput(scores, aux)
