"""The index contract: built once from a similarity head and a corpus, then searched for top-k items.

    index = ExactTopK(chunk_size=65536).build(head, item_embeddings (X, D_x), item_ids (X,))
    scores, ids = index.search(query_embeddings (B, D_q), k, exclude=(B, H) ids, user_ids=...)

``search`` returns ``(B, min(k, X))`` scores sorted descending and the matching item ids. Ties are broken
by corpus position (lower first) in every index, so indexes that see the same scores return the same ids.
``exclude`` removes ids per query (the history window, spec §6); id 0 is padding and ignored, as are ids
outside the corpus. Results are de-duplicated. When the corpus minus a query's exclusions holds fewer than
k items, the missing slots are filled with score ``-inf`` and id 0.

Hyper-parameters are constructor arguments (Hydra ``_target_`` nodes); the head and the corpus are given
to :meth:`RetrievalIndex.build`, usually once per evaluation epoch. An already computed item state (the
evaluation callback has one) can be passed instead of the embeddings.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TypeVar

import torch
from torch import Tensor

from rails.models.similarity.base import SimilarityHead, State, slice_state
from rails.retrieval.exact import CorpusPositions
from rails.retrieval.topk import chunked_topk

IndexT = TypeVar("IndexT", bound="RetrievalIndex")


def encode_corpus(head: SimilarityHead, item_embeddings: Tensor, batch_size: int) -> State:
    """(X, D_x) item embeddings -> item state with leading dim X, encoded ``batch_size`` items at a time."""
    if item_embeddings.dim() != 2:
        raise ValueError(f"item_embeddings must be (X, D_x), got shape {tuple(item_embeddings.shape)}")
    parts = [
        head.encode_items(item_embeddings[start : start + batch_size])
        for start in range(0, max(item_embeddings.shape[0], 1), batch_size)
    ]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


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
        self.item_state: State = {}
        self.item_ids: Tensor = torch.empty(0, dtype=torch.int64)
        self.positions: CorpusPositions | None = None

    # ------------------------------------------------------------------------------------------- build
    @torch.no_grad()
    def build(
        self: IndexT,
        head: SimilarityHead,
        item_embeddings: Tensor | None = None,
        item_ids: Tensor | None = None,
        item_state: State | None = None,
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
        sizes = {value.shape[0] for value in item_state.values()}
        if len(sizes) != 1:
            raise ValueError(f"item_state tensors disagree on the corpus size: {sorted(sizes)}")
        num_items = sizes.pop()
        device = next(iter(item_state.values())).device
        if item_ids is None:
            item_ids = torch.arange(1, num_items + 1, device=device)
        if item_ids.shape != (num_items,):
            raise ValueError(f"item_ids must be ({num_items},), got shape {tuple(item_ids.shape)}")
        self.head = head
        self.item_state = item_state
        self.item_ids = item_ids.to(device=device, dtype=torch.int64)
        self.positions = CorpusPositions(self.item_ids)
        self._build()
        return self

    def _build(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: derived structures (candidate stores, faiss indexes) from ``self.item_state``."""

    @property
    def num_items(self) -> int:
        return int(self.item_ids.numel())

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
        self, query_state: State, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`search`, from an encoded (B, ...) query state."""
        self._require_built()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        exclude_positions = self.exclude_positions(exclude)
        scores, positions = self._search(query_state, k, exclude_positions)
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
        if self.head is None:
            raise RuntimeError(f"{type(self).__name__}.build() must be called before search()")
        return self.head

    @abstractmethod
    def _search(self, query_state: State, k: int, exclude_positions: Tensor | None) -> tuple[Tensor, Tensor]:
        """(B, ...) query state -> (B, min(k, X)) scores and corpus positions (-1 = empty slot)."""


class ExactTopK(RetrievalIndex):
    """Exact top-k for any head: the corpus is scored in chunks with a running top-k.

    Memory is bounded by (B, chunk_size) scores plus whatever the head needs to score a chunk. For the
    dot-product head each chunk is one matmul followed by ``topk``. On CUDA, a Mixture-of-Logits head
    can instead use the fused Triton kernel of :mod:`rails.kernels.mol_topk` (``fused``), which never
    writes the logits or the score matrix to memory.

    Args:
        chunk_size: corpus items scored at once.
        fused: ``True`` requires the fused MoL kernel, ``False`` never uses it, ``None`` uses it when
            it applies (MoL head with "glu_silu" gating, not training, CUDA + Triton, k <= its limit).
        build_batch_size: items encoded at once by :meth:`build`.
    """

    def __init__(
        self, chunk_size: int = 65536, fused: bool | None = None, build_batch_size: int = 65536
    ) -> None:
        super().__init__(build_batch_size)
        if chunk_size < 1:
            raise ValueError(f"retrieval index chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.fused = fused

    def _use_fused(self, query_state: State, k: int) -> bool:
        if self.fused is False:
            return False
        from rails.kernels.mol_topk import fused_mol_topk_supported

        reason = fused_mol_topk_supported(self.head, query_state, self.item_state, k)
        if reason is None:
            return True
        if self.fused:
            raise ValueError(f"ExactTopK(fused=True) cannot use the fused MoL kernel: {reason}")
        return False

    def _search(self, query_state: State, k: int, exclude_positions: Tensor | None) -> tuple[Tensor, Tensor]:
        head = self._require_built()
        if self._use_fused(query_state, k):
            from rails.kernels.mol_topk import fused_mol_topk

            return fused_mol_topk(head, query_state, self.item_state, k, exclude_positions)
        batch = next(iter(query_state.values())).shape[0]
        return chunked_topk(
            lambda start, end: head.score(query_state, slice_state(self.item_state, slice(start, end))),
            self.num_items,
            batch,
            k,
            self.chunk_size,
            exclude_positions,
            stable=True,
            device=self.item_ids.device,
        )


def pad_results(scores: Tensor, positions: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Right-pad (R, K) results to (R, width) with empty slots ``(-inf, -1)``."""
    missing = width - scores.shape[1]
    if missing <= 0:
        return scores, positions
    rows = scores.shape[0]
    scores = torch.cat([scores, scores.new_full((rows, missing), -math.inf)], dim=1)
    positions = torch.cat([positions, positions.new_full((rows, missing), -1)], dim=1)
    return scores, positions
