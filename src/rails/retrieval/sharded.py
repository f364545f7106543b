"""Corpus-sharded search over ``torch.distributed``: each rank indexes a contiguous slice of the corpus.

Every rank calls :meth:`ShardedIndex.search` with the SAME queries (a collective): each searches its
shard, the (B, k) partial results are all-gathered and merged. Shards are concatenated in rank order,
so the merged ties follow global corpus position and the result equals single-process search with the
wrapped index. Without an initialised process group the wrapper is a plain pass-through.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from rails.models.similarity.base import SimilarityHead, State, slice_state
from rails.retrieval.index import RetrievalIndex, encode_corpus, pad_results
from rails.retrieval.topk import merge_topk


def shard_bounds(num_items: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous shard; the first ``num_items % world_size`` shards get one more."""
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def merge_shard_results(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge per-shard results gathered in rank order.

    Args:
        scores: (S, B, K) each shard's scores, sorted, empty slots ``-inf``.
        ids: (S, B, K) their item ids (0 for empty slots).
        k: results kept.

    Returns:
        (B, min(k, S*K)) scores and ids.
    """
    shards, batch, width = scores.shape
    flat_scores = scores.permute(1, 0, 2).reshape(batch, shards * width)
    flat_ids = ids.permute(1, 0, 2).reshape(batch, shards * width)
    return merge_topk(flat_scores, flat_ids, k)


class ShardedIndex:
    """Wraps any :class:`RetrievalIndex` so that each rank holds one contiguous corpus shard.

    Args:
        index: the per-shard index (its hyper-parameters apply to every shard).
        group: process group (default: the world).
    """

    def __init__(self, index: RetrievalIndex, group: dist.ProcessGroup | None = None) -> None:
        self.index = index
        self.group = group
        self.num_items = 0

    def _world(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(self.group), dist.get_world_size(self.group)
        return 0, 1

    @torch.no_grad()
    def build(
        self,
        head: SimilarityHead,
        item_embeddings: Tensor | None = None,
        item_ids: Tensor | None = None,
        item_state: State | None = None,
    ) -> ShardedIndex:
        """Index this rank's shard of the FULL corpus given here (same arguments on every rank)."""
        if (item_embeddings is None) == (item_state is None):
            raise ValueError("build() needs exactly one of item_embeddings and item_state")
        source = item_embeddings if item_embeddings is not None else next(iter(item_state.values()))  # type: ignore[union-attr]
        self.num_items = int(source.shape[0])
        if item_ids is None:
            item_ids = torch.arange(1, self.num_items + 1, device=source.device)
        rank, world = self._world()
        start, end = shard_bounds(self.num_items, rank, world)
        if item_state is None:
            assert item_embeddings is not None
            item_state = encode_corpus(head, item_embeddings[start:end], self.index.build_batch_size)
        else:
            item_state = slice_state(item_state, slice(start, end))
        self.index.build(head, item_ids=item_ids[start:end], item_state=item_state)
        return self

    @torch.no_grad()
    def search(
        self, query_embeddings: Tensor, k: int, exclude: Tensor | None = None, **ctx: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Collective top-k over the whole corpus; same contract as :meth:`RetrievalIndex.search`."""
        head = self.index._require_built()
        return self.search_state(head.encode_queries(query_embeddings, **ctx), k, exclude)

    @torch.no_grad()
    def search_state(
        self, query_state: State, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`search`, from an encoded (B, ...) query state."""
        width = min(k, self.num_items)
        _, world = self._world()
        if self.index.num_items:
            scores, ids = self.index.search_state(query_state, k, exclude)
        else:
            batch = next(iter(query_state.values())).shape[0]
            device = self.index.item_ids.device
            scores, ids = (
                torch.empty(batch, 0, device=device),
                torch.empty(batch, 0, dtype=torch.int64, device=device),
            )
        scores, positions = pad_results(scores.float(), ids, width)
        ids = positions.clamp_min(0)  # padding slots: id 0
        if world == 1:
            return scores, ids
        gathered_scores = [torch.empty_like(scores) for _ in range(world)]
        gathered_ids = [torch.empty_like(ids) for _ in range(world)]
        dist.all_gather(gathered_scores, scores.contiguous(), group=self.group)
        dist.all_gather(gathered_ids, ids.contiguous(), group=self.group)
        return merge_shard_results(torch.stack(gathered_scores), torch.stack(gathered_ids), width)
