"""Corpus-sharded search over ``torch.distributed``: each rank indexes a contiguous slice of the corpus.

:class:`ShardedIndex` is a :class:`~rails.retrieval.indexes.base.RetrievalIndex` whose search is a collective:
every rank calls :meth:`~rails.retrieval.indexes.base.RetrievalIndex.search_state` with the SAME queries,
each searches its shard with the wrapped index, and the (B, k) partial results (global corpus positions)
are all-gathered and merged. Shards are concatenated in rank order, so merged ties follow global corpus
position and the result equals single-process search with the wrapped index. Without an initialised
process group (or with one process) it is a plain pass-through. The evaluator
(:mod:`rails.retrieval.evaluator`) gathers the queries of every rank before searching such an index.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from rails.models.similarity.base import SimilarityHead
from rails.models.similarity.states import HeadState
from rails.retrieval.corpus import CorpusPositions, encode_corpus
from rails.retrieval.indexes.base import RetrievalIndex
from rails.retrieval.topk import merge_topk, pad_results


def shard_bounds(num_items: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous shard; the first ``num_items % world_size`` shards get one more."""
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def merge_shard_results(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge per-shard results gathered in rank order.

    Args:
        scores: (S, B, K) each shard's scores, sorted, empty slots ``-inf``.
        ids: (S, B, K) their item ids or global corpus positions (empty slots 0 or -1).
        k: results kept.

    Returns:
        (B, min(k, S*K)) scores and ids; ties keep the lower shard (= the lower corpus position).
    """
    shards, batch, width = scores.shape
    flat_scores = scores.permute(1, 0, 2).reshape(batch, shards * width)
    flat_ids = ids.permute(1, 0, 2).reshape(batch, shards * width)
    return merge_topk(flat_scores, flat_ids, k)


class ShardedIndex(RetrievalIndex):
    """Wraps any :class:`RetrievalIndex` so that each rank holds one contiguous corpus shard.

    Args:
        index: the per-shard index (its hyper-parameters apply to every shard).
        group: process group (default: the world).
    """

    def __init__(self, index: RetrievalIndex, group: dist.ProcessGroup | None = None) -> None:
        if not isinstance(index, RetrievalIndex):
            raise ValueError(f"ShardedIndex(index=...) must be a RetrievalIndex, got {type(index).__name__}")
        super().__init__(index.build_batch_size)
        self.index = index
        self.group = group
        self.shard_start = 0

    def _world(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(self.group), dist.get_world_size(self.group)
        return 0, 1

    @property
    def collective(self) -> bool:
        return self._world()[1] > 1

    @torch.no_grad()
    def build(  # type: ignore[override]
        self,
        head: SimilarityHead,
        item_embeddings: Tensor | None = None,
        item_ids: Tensor | None = None,
        item_state: HeadState | None = None,
    ) -> ShardedIndex:
        """Index this rank's shard of the FULL corpus given here (same arguments on every rank)."""
        if (item_embeddings is None) == (item_state is None):
            raise ValueError("build() needs exactly one of item_embeddings and item_state")
        if item_state is not None:
            num_items, device = len(item_state), item_state.device
        else:
            assert item_embeddings is not None
            num_items, device = int(item_embeddings.shape[0]), item_embeddings.device
        item_ids = self._corpus_ids(item_ids, num_items, device)
        rank, world = self._world()
        start, end = shard_bounds(num_items, rank, world)
        if item_state is None:
            assert item_embeddings is not None
            shard_state = encode_corpus(head, item_embeddings[start:end], self.build_batch_size)
        else:
            shard_state = item_state.index(slice(start, end))
        self.index.build(head, item_ids=item_ids[start:end], item_state=shard_state)
        self.head, self.item_state, self.item_ids = head, shard_state, item_ids
        self.positions = CorpusPositions(item_ids)
        self.shard_start = start
        return self

    def _search(
        self, query_state: HeadState, k: int, exclude_positions: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        width = min(k, self.num_items)
        start, size = self.shard_start, self.index.num_items
        device = self.item_ids.device
        if size:
            local = None
            if exclude_positions is not None:
                inside = (exclude_positions >= start) & (exclude_positions < start + size)
                local = torch.where(inside, exclude_positions - start, -1)
            self.index.exact_fallback = torch.zeros(len(query_state), dtype=torch.bool, device=device)
            scores, positions = self.index._search(query_state, k, local)
            positions = torch.where(positions >= 0, positions + start, -1)
            fallback = self.index.exact_fallback
        else:
            scores = torch.empty(len(query_state), 0, device=device)
            positions = torch.empty(len(query_state), 0, dtype=torch.int64, device=device)
            fallback = torch.zeros(len(query_state), dtype=torch.bool, device=device)
        scores, positions = pad_results(scores.float(), positions, width)
        _, world = self._world()
        if world == 1:
            self.exact_fallback = fallback
            return scores, positions
        gathered_scores = [torch.empty_like(scores) for _ in range(world)]
        gathered_positions = [torch.empty_like(positions) for _ in range(world)]
        dist.all_gather(gathered_scores, scores.contiguous(), group=self.group)
        dist.all_gather(gathered_positions, positions.contiguous(), group=self.group)
        flags = fallback.to(torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        self.exact_fallback = flags.bool()  # a query answered by exact search on any shard
        return merge_shard_results(torch.stack(gathered_scores), torch.stack(gathered_positions), width)
