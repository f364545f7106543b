"""Exact MoL top-k outside the indexes, for the top-k benchmark (:mod:`rails.retrieval.benchmark`).

- :func:`plain_bruteforce_topk`: the *baseline row*, MoL brute force as the original RAILS code scores it in
  plain PyTorch: bf16 item chunks, per chunk the (B, C, P) pair logits (einsum), the full query-item gating
  MLP on (B, C, P), the softmax mixture (fp32 softmax, as under bf16 autocast) and a running ``torch.topk``
  merge;
- :func:`exact_topk`: the *ground truth*, the same arithmetic at a given precision (fp32; float64 for the
  check) with the package's deterministic tie-break (score descending, then corpus position);
- :func:`float64_check`: the fp32 ground truth checked against float64 on a few queries (max abs score
  difference and id agreement up to ties).

Everything is chunked over items: memory is bounded by ``max_elements`` per (B, C, max(P, H)) intermediate,
never (B, X, P), and the corpus is only cast chunk by chunk (no fp32 copy of a bf16 corpus). The mixture
follows :class:`~rails.models.similarity.states.MoLMixing` ("glu_silu" gating only, like the fused kernel).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import MoLItemState, MoLMixing, MoLQueryState
from rails.retrieval.topk import chunked_topk


def mol_scores(
    mixing: MoLMixing,
    query_state: MoLQueryState,
    item_state: MoLItemState,
    dtype: torch.dtype,
    softmax_dtype: torch.dtype | None = None,
) -> Tensor:
    """MoL scores of every (query, item) pair computed in ``dtype``.

    Args:
        mixing: the head's mixture parameters (``head.mixing()``), "glu_silu" gating, eval mode.
        query_state: (B, ...) query state (components (B, P_Q, d_P), gate (B, P)).
        item_state: (C, ...) item state (components (C, P_X, d_P), gate (C, P)).
        dtype: compute dtype of logits, gating MLP and mixture.
        softmax_dtype: dtype of the softmax and the mixture sum (default ``dtype``).

    Returns:
        (B, C) scores in ``softmax_dtype or dtype``.
    """
    if mixing.combination != "glu_silu" or mixing.training:
        raise ValueError(
            f"benchmark MoL scoring implements eval-mode 'glu_silu' gating, got {mixing.combination!r} "
            f"(training={mixing.training})"
        )

    def cast(value: Tensor | None) -> Tensor | None:
        return None if value is None else value.to(dtype)

    queries = query_state.components.to(dtype)
    items = item_state.components.to(dtype)
    logits = torch.einsum("bid,xjd->bxij", queries, items).flatten(-2) / mixing.temperature  # (B, C, P)
    hidden = F.silu(F.linear(logits, cast(mixing.qi_hidden_weight), cast(mixing.qi_hidden_bias)))
    qi = F.linear(hidden, cast(mixing.qi_out_weight), cast(mixing.qi_out_bias))
    gate = F.silu(torch.addcmul(qi, query_state.gate.to(dtype)[:, None, :], item_state.gate.to(dtype)[None]))
    weights = torch.softmax(gate, dim=-1, dtype=softmax_dtype or dtype)
    return (weights * logits.to(weights.dtype)).sum(dim=-1)


@contextlib.contextmanager
def full_precision_matmuls() -> Iterator[None]:
    """fp32 matmuls without TF32 (the ground truth must not depend on the global precision setting)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def chunk_items(head: MoLSimilarity, batch: int, chunk_size: int, max_elements: int) -> int:
    """Items per chunk: ``chunk_size`` capped so that batch x chunk x max(P, H) <= ``max_elements``."""
    if chunk_size < 1 or max_elements < 1:
        raise ValueError(f"chunk_size and max_elements must be >= 1, got {chunk_size}, {max_elements}")
    width = max(head.num_pairs, head.mixing().hidden_dim)
    return max(1, min(chunk_size, max_elements // max(1, batch * width)))


@torch.no_grad()
def plain_bruteforce_topk(
    head: MoLSimilarity,
    query_state: MoLQueryState,
    item_state: MoLItemState,
    k: int,
    chunk_size: int = 65536,
    max_elements: int = 1 << 28,
) -> tuple[Tensor, Tensor]:
    """The plain-PyTorch bf16 brute force (the benchmark's baseline): (B, min(k, X)) scores and positions.

    Ties are broken as ``torch.topk`` breaks them (no deterministic order, as in the original code).
    """
    mixing = head.mixing()
    bf16 = torch.bfloat16
    queries = MoLQueryState(query_state.components.to(bf16), query_state.gate.to(bf16))
    num_items = len(item_state)
    chunk = chunk_items(head, len(query_state), chunk_size, max_elements)
    best: Tensor | None = None
    best_positions: Tensor | None = None
    for start in range(0, num_items, chunk):
        part = item_state.index(slice(start, min(start + chunk, num_items)))
        scores = mol_scores(mixing, queries, part, bf16, softmax_dtype=torch.float32)
        values, index = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        index = index + start
        if best is not None:
            assert best_positions is not None
            values, index = torch.cat([best, values], dim=1), torch.cat([best_positions, index], dim=1)
            values, keep = torch.topk(values, min(k, values.shape[1]), dim=1)
            index = index.gather(1, keep)
        best, best_positions = values, index
    if best is None or best_positions is None:
        raise ValueError("plain_bruteforce_topk: empty corpus")
    return best, best_positions


@torch.no_grad()
def exact_topk(
    head: MoLSimilarity,
    query_state: MoLQueryState,
    item_state: MoLItemState,
    k: int,
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 65536,
    max_elements: int = 1 << 28,
) -> tuple[Tensor, Tensor]:
    """Exact MoL top-k at ``dtype`` (the ground truth): (B, min(k, X)) scores and positions, ties by position."""
    mixing = head.mixing()
    chunk = chunk_items(head, len(query_state), chunk_size, max_elements)
    with full_precision_matmuls():
        return chunked_topk(
            lambda start, end: mol_scores(mixing, query_state, item_state.index(slice(start, end)), dtype),
            len(item_state),
            len(query_state),
            k,
            chunk,
            stable=True,
            device=item_state.device,
        )


@torch.no_grad()
def float64_check(
    head: MoLSimilarity,
    query_state: MoLQueryState,
    item_state: MoLItemState,
    scores: Tensor,
    positions: Tensor,
    chunk_size: int = 65536,
    max_elements: int = 1 << 26,
    rel_tolerance: float = 1e-5,
) -> dict[str, float | int | bool]:
    """Check an fp32 top-k (its first rows) against float64 exact search.

    Args:
        head: the MoL head.
        query_state: (n, ...) the checked queries.
        item_state: (X, ...) the corpus.
        scores: (n, K) the fp32 top-k scores of these queries.
        positions: (n, K) their corpus positions.
        chunk_size: items per float64 chunk (capped by ``max_elements``).
        max_elements: bound on each float64 (n, C, max(P, H)) intermediate.
        rel_tolerance: float64 scores closer than this (times max(1, max |score|)) count as tied.

    Returns:
        ``queries``; ``max_abs_score_diff`` = max |fp32 score - float64 score| of the fp32 top-k items;
        ``id_agreement`` = share of fp32 ids that are in the float64 top-k; ``tie_tolerance`` (absolute);
        and ``ids_agree_up_to_ties``: every id in one list but not the other has a float64 score within
        ``tie_tolerance`` of the float64 k-th score.
    """
    count, width = positions.shape
    exact, exact_positions = exact_topk(
        head, query_state, item_state, width, torch.float64, chunk_size, max_elements
    )
    mixing = head.mixing()
    rescored = torch.cat(
        [
            mol_scores(
                mixing, query_state.index(slice(i, i + 1)), item_state.gather(positions[i]), torch.float64
            )
            for i in range(count)
        ]
    )  # (n, K) float64 scores of the fp32 top-k items
    max_diff = float((scores.double() - rescored).abs().max()) if count else 0.0
    kth = exact[:, -1:]
    tolerance = rel_tolerance * max(1.0, float(exact.abs().max()) if count else 1.0)
    ours_only = ~(positions[:, :, None] == exact_positions[:, None, :]).any(dim=2)
    theirs_only = ~(exact_positions[:, :, None] == positions[:, None, :]).any(dim=2)
    off_ours = ((rescored - kth).abs() > tolerance) & ours_only
    off_theirs = ((exact - kth).abs() > tolerance) & theirs_only
    agree = count == 0 or not bool(off_ours.any() or off_theirs.any())
    return {
        "queries": count,
        "max_abs_score_diff": max_diff,
        "id_agreement": float((~ours_only).double().mean()) if count else math.nan,
        "tie_tolerance": tolerance,
        "ids_agree_up_to_ties": agree,
    }
