"""Deterministic top-k building blocks shared by every index: stable selection, merging, chunked search.

Every index of :mod:`rails.retrieval` orders results by score (descending) and breaks ties by corpus
position (ascending), so exact, approximate and sharded searches return identical ids whenever they see
identical scores. ``torch.topk`` alone picks an arbitrary subset among items tied at the k-th score;
:func:`stable_topk` fixes that subset to the lowest positions.

Padding convention: a result slot that could not be filled (the corpus minus the exclusions is smaller
than k) has score ``-inf`` and position ``-1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from rails.retrieval.corpus import exclusion_mask

ChunkScorer = Callable[[int, int], Tensor]  # (start, end) -> (R, end - start) scores


def stable_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k per row, score descending, ties broken by the lower column; no host synchronisation.

    NaN counts as ``-inf`` here (a check would need the host); :class:`RunningTopK` reports NaN scores once
    per search instead. Capturable in a CUDA graph.

    Each float32 score becomes an int64 key ``(order-preserving score bits) * 2**32 + (2**32 - 1 - column)``,
    so one ``torch.topk`` over distinct keys sorts by score descending and breaks ties by the lower column.

    Args:
        scores: (R, C) scores (``-inf`` = masked), C < 2**32.
        k: number kept; clipped to C.

    Returns:
        (R, min(k, C)) float32 scores and int64 column indices.
    """
    k = min(k, scores.shape[1])
    clean = scores.float().masked_fill(scores.isnan(), -math.inf) + 0.0  # + 0.0: -0.0 ties with +0.0
    bits = clean.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # monotone in the float order
    column = torch.arange(scores.shape[1], device=scores.device, dtype=torch.int64)
    index = torch.topk(ordered * 4294967296 + (4294967295 - column), k, dim=1).indices
    return clean.gather(1, index), index


def pad_results(scores: Tensor, positions: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Right-pad (R, K) results to (R, width) with empty slots ``(-inf, -1)``."""
    missing = width - scores.shape[1]
    if missing <= 0:
        return scores, positions
    rows = scores.shape[0]
    scores = torch.cat([scores, scores.new_full((rows, missing), -math.inf)], dim=1)
    positions = torch.cat([positions, positions.new_full((rows, missing), -1)], dim=1)
    return scores, positions


def merge_topk(scores: Tensor, positions: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of concatenated result lists, keeping the deterministic order.

    Args:
        scores: (R, C) scores of C concatenated results per row, each input list sorted and the lists
            concatenated in increasing position order (chunks of a corpus, ranks of a sharded corpus).
        positions: (R, C) int64 positions of those results (-1 = padding, with score ``-inf``).
        k: results kept.

    Returns:
        (R, min(k, C)) scores and positions; ties keep the lower position (stable sort).
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), positions.gather(1, order)


class RunningTopK:
    """Top-k of a corpus whose scores arrive chunk by chunk, in increasing corpus position.

    Args:
        k: results kept per row (the caller clips it to the corpus size).
        stable: deterministic tie-breaking by position (exact search); ``False`` uses plain
            ``torch.topk`` (candidate generation, where the order of ties does not matter).
    """

    def __init__(self, k: int, stable: bool = True) -> None:
        self.k = k
        self.stable = stable
        self.scores: Tensor | None = None
        self.positions: Tensor | None = None
        self._nan: Tensor | None = None  # stable: device flag of any NaN score so far (checked in result())

    def update(self, scores: Tensor, start: int, exclude_positions: Tensor | None = None) -> None:
        """Merge the (R, C) scores of corpus[start:start + C]; ``exclude_positions`` (R, H) are dropped."""
        end = start + scores.shape[1]
        if (
            self.stable
        ):  # exact search reports NaN scores (once, in result()); candidate generation needs no host
            nan = scores.isnan().any()
            self._nan = nan if self._nan is None else self._nan | nan
        if exclude_positions is not None:
            scores = scores.masked_fill(exclusion_mask(exclude_positions, start, end), -math.inf)
        if self.stable:
            values, index = stable_topk(scores, self.k)
        else:
            values, index = torch.topk(scores, min(self.k, end - start), dim=1)
        positions = (index + start).masked_fill(values == -math.inf, -1)
        if self.scores is None:
            self.scores, self.positions = values, positions
            return
        assert self.positions is not None
        cat_scores = torch.cat([self.scores, values], dim=1)
        cat_positions = torch.cat([self.positions, positions], dim=1)
        if self.stable:
            self.scores, self.positions = merge_topk(cat_scores, cat_positions, self.k)
        else:
            self.scores, index = torch.topk(cat_scores, min(self.k, cat_scores.shape[1]), dim=1)
            self.positions = cat_positions.gather(1, index)

    def result(self, rows: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """(R, k') scores sorted descending and int64 positions; (R, 0) when nothing was merged.

        Raises:
            ValueError: (stable) when a merged score was NaN (one host synchronisation per search).
        """
        if self._nan is not None and bool(self._nan):
            raise ValueError("top-k search: scores contain NaN (a broken model or state?)")
        if self.scores is None:
            empty = torch.empty(rows, 0, device=device)
            return empty, empty.long()
        assert self.positions is not None
        return self.scores, self.positions


def chunked_topk(
    score_chunk: ChunkScorer,
    num_items: int,
    rows: int,
    k: int,
    chunk_size: int,
    exclude_positions: Tensor | None = None,
    stable: bool = True,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-k over a corpus scored chunk by chunk, with a running top-k (memory R x (k + chunk)).

    Args:
        score_chunk: returns (R, end - start) scores against corpus[start:end].
        num_items: X.
        rows: R (queries, or query x component-pair rows).
        k: results per row; the output has min(k, X) columns.
        chunk_size: corpus items scored at once.
        exclude_positions: (R, H) corpus positions to drop per row (-1 = none).
        stable: deterministic tie-breaking by position (see :class:`RunningTopK`).
        device: output device when ``num_items`` is 0.

    Returns:
        (R, min(k, X)) float scores sorted descending and int64 corpus positions; excluded or missing
        slots are ``(-inf, -1)``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    running = RunningTopK(min(k, num_items), stable)
    for start in range(0, num_items, chunk_size):
        running.update(score_chunk(start, min(start + chunk_size, num_items)), start, exclude_positions)
    return running.result(rows, device)
