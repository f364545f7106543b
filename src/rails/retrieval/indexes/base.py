"""The index contract: built once from a similarity head and a corpus, then searched for top-k items.

    index = ExactTopK(chunk_size=65536).build(head, item_embeddings (X, D_x), item_ids (X,))
    scores, ids = index.search(query_embeddings (B, D_q), k, exclude=(B, H) ids, user_ids=...)
    scores, ids = index.search_state(query_state, k, exclude)      # from an encoded query state

``search`` returns ``(B, min(k, X))`` scores sorted descending and the matching item ids. Ties are broken
by corpus position (lower first) in every index, so indexes that see the same scores return the same ids.
``exclude`` removes ids per query (the history window, spec §6); id 0 is padding and ignored, as are ids
outside the corpus. Results are de-duplicated. When the corpus minus a query's exclusions holds fewer than
k items, the missing slots are filled with score ``-inf`` and id 0.

Hyper-parameters are constructor arguments (Hydra ``_target_`` nodes); the head and the corpus are given
to :meth:`RetrievalIndex.build`, usually once per evaluation epoch. An already computed item state
(:class:`~rails.models.similarity.states.HeadState`; the evaluator has one) can be passed instead of the
embeddings. After each search, :attr:`RetrievalIndex.exact_fallback` tells which queries an approximate
index answered by exact search instead (too few candidates); :attr:`RetrievalIndex.collective` is True for
indexes whose search is a collective over processes (:class:`~rails.retrieval.indexes.sharded.ShardedIndex`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeVar

import torch
from torch import Tensor

from rails.models.similarity.base import SimilarityHead
from rails.models.similarity.states import HeadState
from rails.retrieval.corpus import CorpusPositions, encode_corpus

IndexT = TypeVar("IndexT", bound="RetrievalIndex")


class RetrievalIndex(ABC):
    """Base class: corpus bookkeeping, exclusions, id mapping; subclasses implement :meth:`_search`.

    Args:
        build_batch_size: items encoded at once by :meth:`build` (when given embeddings).
    """

    def __init__(self, build_batch_size: int = 65536) -> None:
        if build_batch_size < 1:
            raise ValueError(f"build_batch_size must be >= 1, got {build_batch_size}")
        self.build_batch_size = build_batch_size
        self.head: SimilarityHead | None = None
        self.item_state: HeadState | None = None
        self.item_ids: Tensor = torch.empty(0, dtype=torch.int64)
        self.positions: CorpusPositions | None = None
        self.exact_fallback: Tensor = torch.zeros(0, dtype=torch.bool)
        """(B,) bool: the queries of the last search answered by the exact fallback (approximate indexes)."""

    # ------------------------------------------------------------------------------------------- build
    @torch.no_grad()
    def build(
        self: IndexT,
        head: SimilarityHead,
        item_embeddings: Tensor | None = None,
        item_ids: Tensor | None = None,
        item_state: HeadState | None = None,
    ) -> IndexT:
        """Index a corpus; returns ``self``.

        Args:
            head: the similarity head (used in eval mode by the caller's choice; not switched here).
            item_embeddings: (X, D_x) raw item embeddings (encoded with ``head.encode_items``).
            item_ids: (X,) unique int64 item ids (default ``1..X``).
            item_state: the already encoded (X, ...) item state, instead of ``item_embeddings``.
        """
        if (item_embeddings is None) == (item_state is None):
            raise ValueError("build() needs exactly one of item_embeddings and item_state")
        if item_state is None:
            assert item_embeddings is not None
            item_state = encode_corpus(head, item_embeddings, self.build_batch_size)
        self._set_corpus(head, item_state, self._corpus_ids(item_ids, len(item_state), item_state.device))
        self._build()
        return self

    @staticmethod
    def _corpus_ids(item_ids: Tensor | None, num_items: int, device: torch.device) -> Tensor:
        if item_ids is None:
            return torch.arange(1, num_items + 1, device=device)
        if item_ids.shape != (num_items,):
            raise ValueError(f"item_ids must be ({num_items},), got shape {tuple(item_ids.shape)}")
        return item_ids.to(device=device, dtype=torch.int64)

    def _set_corpus(self, head: SimilarityHead, item_state: HeadState, item_ids: Tensor) -> None:
        if len(item_state.lead_shape) != 1:
            raise ValueError(f"item_state must have one leading dim (X,), got {item_state.lead_shape}")
        self.head = head
        self.item_state = item_state
        self.item_ids = item_ids
        self.positions = CorpusPositions(item_ids)

    def _build(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: derived structures (candidate stores, faiss indexes) from ``self.item_state``."""

    @property
    def num_items(self) -> int:
        """X, the corpus size."""
        return int(self.item_ids.numel())

    @property
    def collective(self) -> bool:
        """True when every process must call :meth:`search_state` together with the same queries."""
        return False

    @property
    def exact_fallback_rows(self) -> int:
        """Queries of the last search answered by exact search instead of the index's own method."""
        return int(self.exact_fallback.sum())

    # ------------------------------------------------------------------------------------------ search
    @torch.no_grad()
    def search(
        self, query_embeddings: Tensor, k: int, exclude: Tensor | None = None, **ctx: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Top-k items of each query.

        Args:
            query_embeddings: (B, D_q) encoder outputs.
            k: results per query (>= 1).
            exclude: (B, H) item ids removed per query; 0 = padding.
            **ctx: query context of the head (e.g. ``user_ids`` (B,)).

        Returns:
            (B, min(k, X)) scores sorted descending and (B, min(k, X)) int64 item ids (see module doc).
        """
        head = self._require_built()
        return self.search_state(head.encode_queries(query_embeddings, **ctx), k, exclude)

    @torch.no_grad()
    def search_state(
        self, query_state: HeadState, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`search`, from an encoded (B, ...) query state."""
        self._require_built()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.exact_fallback = torch.zeros(len(query_state), dtype=torch.bool, device=self.item_ids.device)
        scores, positions = self._search(query_state, k, self.exclude_positions(exclude))
        return scores, self.ids_of(positions)

    def exclude_positions(self, exclude: Tensor | None) -> Tensor | None:
        """(B, H) ids (0 = padding) -> (B, H) corpus positions (-1 = nothing to exclude), or None."""
        if exclude is None:
            return None
        assert self.positions is not None
        if exclude.dim() != 2:
            raise ValueError(f"exclude must be (B, H) item ids, got shape {tuple(exclude.shape)}")
        exclude = exclude.to(self.item_ids.device)
        return torch.where(exclude != 0, self.positions(exclude), -1)

    def ids_of(self, positions: Tensor) -> Tensor:
        """(B, K) corpus positions (-1 = empty slot) -> (B, K) item ids (0 for empty slots)."""
        ids = self.item_ids[positions.clamp_min(0)]
        return torch.where(positions >= 0, ids, torch.zeros_like(ids))

    def _require_built(self) -> SimilarityHead:
        if self.head is None or self.item_state is None:
            raise RuntimeError(f"{type(self).__name__}.build() must be called before search()")
        return self.head

    @abstractmethod
    def _search(
        self, query_state: HeadState, k: int, exclude_positions: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """(B, ...) query state -> (B, min(k, X)) scores and corpus positions (-1 = empty slot)."""
