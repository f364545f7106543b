"""Two-pass exact MoL top-k: per-query thresholds from a strided sample, then candidate emission.

The running top-k of :func:`rails.kernels.mol_topk_triton.fused_mol_topk` merges a tile whenever one of
its keys beats the program's own k-th best; with ~100 corpus splits of a few thousand items each, that
threshold stays low and nearly every tile is merged (a sort of ``K_PAD`` keys on chip per tile: 3.9 of
10.4 ms at 1M items, B = 32, 8x4x64 in the 2026-12-01 stage profile, results/profiles/).

Here the kernel first searches every ``stride``-th item (``X / stride`` items, a strided view: no copy of
the corpus beyond that sample). The k-th best key of the sample (after history exclusion) is a lower bound
of the k-th best key of the whole corpus, because the sample is a subset; lowered by a small margin for
rounding between launches, it is a fixed threshold per query. The second pass scores the whole corpus and
appends only the keys above it (about ``k * stride`` per query) to a candidate buffer; the result is the
top k of those. Exact by construction: every key of the true top-k is above the threshold. A query with
more candidates than ``capacity`` (possible only for adversarial score distributions) is searched again
with the running top-k, and that is logged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rails.kernels.mol_topk_triton import EMPTY_KEY, fused_mol_topk

MIN_SAMPLE_PER_K = 16  # the sample holds at least this many items per result wanted
DEFAULT_STRIDE = 64  # 1.6 % of the corpus in the first pass, ~64 k candidates per query in the second
THRESHOLD_MARGIN = 1e-4  # relative (plus absolute) lowering of the sample's k-th best score
# Up to this corpus size one pass (the running top-k with parked merges) is the default: B = 32, 8x4x64, without
# prune, it took 7.26 ms against 9.57 ms for two passes at 1M items and 56.13 against 63.90 ms at 10M (H200, one
# profile each, results/profiles/2026-12-02-h200-round24-step-tiles-{1M,10M}.md); larger corpora keep two passes
# until timed.
ONE_PASS_MAX_ITEMS = 10_000_000


def two_pass_stride(num_items: int, k: int) -> int:
    """The sample stride two passes would use on ``num_items`` items for top-``k`` (0: the sample too small)."""
    stride = min(DEFAULT_STRIDE, num_items // (MIN_SAMPLE_PER_K * max(k, 1)))
    return stride if stride >= 4 else 0


def default_sample_stride(num_items: int, k: int) -> int:
    """The default search's sample stride: 0 (one pass) up to ``ONE_PASS_MAX_ITEMS`` items, else
    :func:`two_pass_stride`."""
    return 0 if num_items <= ONE_PASS_MAX_ITEMS else two_pass_stride(num_items, k)


def candidate_capacity(k: int, stride: int, num_items: int) -> int:
    """Candidate slots per query: twice the expected ``k * stride`` plus slack, at most the corpus."""
    return min(num_items, 2 * k * stride + 1024)


def packed_lower_bounds(scores: Tensor) -> Tensor:
    """(B,) float32 scores -> (B,) int64 keys below every packed key whose score is >= that score.

    Keys pack the order-preserving bits of the float32 score high and ``2^32 - 1 - position`` low (see
    :mod:`rails.kernels.mol_topk_kernel`); -inf or NaN give the empty key (everything passes).
    """
    bits = scores.float().contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    keys = ordered * 4294967296 - 1
    return torch.where(scores > -torch.inf, keys, torch.full_like(keys, EMPTY_KEY))


def sample_exclusions(exclude_positions: Tensor | None, stride: int) -> Tensor | None:
    """(B, E) corpus positions -> the same positions in the strided sample (-1 where not sampled)."""
    if exclude_positions is None:
        return None
    sampled = (exclude_positions >= 0) & (exclude_positions % stride == 0)
    return torch.where(sampled, exclude_positions // stride, torch.full_like(exclude_positions, -1))


def sample_thresholds(
    query_components: Tensor,
    query_gate: Tensor,
    item_components: Tensor,
    item_gate: Tensor,
    *,
    stride: int,
    k: int,
    exclude_positions: Tensor | None = None,
    **kernel_args: object,
) -> Tensor:
    """(B,) int64 keys below every key of each query's true top-``k`` (after exclusion).

    Args:
        query_components: (B, P_Q, d_P); query_gate: (B, P); item_components: (X, P_X, d_P);
            item_gate: (X, P): as for :func:`fused_mol_topk`.
        stride: every ``stride``-th item is searched (positions 0, stride, 2 stride, ...).
        k: results wanted per query.
        exclude_positions: (B, E) corpus positions dropped from the ranking (-1 = none).
        kernel_args: the remaining keyword arguments of :func:`fused_mol_topk` (gating weights,
            temperature, block sizes, ...).
    """
    scores, _ = fused_mol_topk(
        query_components,
        query_gate,
        item_components[::stride],
        item_gate[::stride],
        k=k,
        exclude_positions=sample_exclusions(exclude_positions, stride),
        **kernel_args,  # type: ignore[arg-type]
    )
    batch = query_components.shape[0]
    kth = torch.full((batch,), -torch.inf, device=scores.device)
    if scores.shape[1] >= k:
        kth = scores[:, k - 1]
    lowered = kth - THRESHOLD_MARGIN * (1.0 + kth.abs())
    return packed_lower_bounds(lowered)


def two_pass_mol_topk(
    query_components: Tensor,
    query_gate: Tensor,
    item_components: Tensor,
    item_gate: Tensor,
    *,
    k: int,
    sample_stride: int | None = None,
    exclude_positions: Tensor | None = None,
    **kernel_args: object,
) -> tuple[Tensor, Tensor]:
    """Exact MoL top-k in two passes (module docstring); same arguments and results as :func:`fused_mol_topk`.

    Args:
        sample_stride: every how many items the first pass searches; None: :func:`default_sample_stride`;
            0 or 1, or a sample smaller than ``k`` items: one pass with the running top-k.
    """
    num_items = item_components.shape[0]
    stride = default_sample_stride(num_items, k) if sample_stride is None else sample_stride
    if stride <= 1 or num_items // stride < k:
        return fused_mol_topk(
            query_components, query_gate, item_components, item_gate, k=k,
            exclude_positions=exclude_positions, **kernel_args,  # type: ignore[arg-type]
        )  # fmt: skip
    thresholds = sample_thresholds(
        query_components, query_gate, item_components, item_gate,
        stride=stride, k=k, exclude_positions=exclude_positions, **kernel_args,
    )  # fmt: skip
    return fused_mol_topk(
        query_components, query_gate, item_components, item_gate, k=k,
        exclude_positions=exclude_positions, thresholds=thresholds,
        capacity=candidate_capacity(min(k, num_items), stride, num_items), **kernel_args,  # type: ignore[arg-type]
    )  # fmt: skip
