"""Approximate top-k for Mixture-of-Logits heads: MIPS candidates, then exact re-scoring (spec §7.3-7.5).

Every index here works in two stages:

1. *Candidates* from raw component inner products (no temperature, no gating), through a
   :class:`~rails.retrieval.mips.MIPSBackend` (PyTorch or faiss):
   - :class:`PerComponentTopK`: for every pair (i, j) the ``k_per_pair`` items with the largest
     ``<f_i(q), g_j(x)>`` (P * k_per_pair candidates per query);
   - :class:`AverageTopK`: the ``num_candidates`` items with the largest ``<mean_i f_i(q), mean_j g_j(x)>``;
   - :class:`CombinedTopK`: the union of both.
2. *Re-scoring*: candidates are de-duplicated, excluded ids dropped, and the rest scored with the full
   head (``score_pairs``, gating included); the top k are returned in the package's deterministic order.

Each index returns exactly ``min(k, X)`` de-duplicated results: a query whose candidate set (after
de-duplication and exclusions) is smaller than k is answered by exact search instead; those queries are
flagged in ``exact_fallback`` after each search (the evaluator logs their share as
``{stage}/{name}/exact_fallback_rate``). With a budget that covers the corpus, results equal
:class:`~rails.retrieval.indexes.exact.ExactTopK`'s.

The head must produce MoL states (:class:`~rails.models.similarity.states.MoLQueryState` with components
(B, P_Q, d_P), :class:`~rails.models.similarity.states.MoLItemState` with components (X, P_X, d_P)); other
states are refused with a ValueError at :meth:`build` / search time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from rails.models.similarity.base import SimilarityHead
from rails.models.similarity.states import HeadState, MoLState
from rails.retrieval.indexes.base import RetrievalIndex
from rails.retrieval.indexes.exact import ExactTopK
from rails.retrieval.indexes.graphs import GraphedStage
from rails.retrieval.mips import MIPSBackend, TorchMIPS
from rails.retrieval.topk import pad_results, stable_topk

MIPSFactory = Callable[[], MIPSBackend]


def _components(state: HeadState, side: str) -> Tensor:
    """(N, P, d_P) components of a MoL state with one leading dim; ValueError for any other state."""
    if not isinstance(state, MoLState) or len(state.lead_shape) != 1:
        raise ValueError(
            f"approximate MoL top-k needs a MoL {side} state with components (N, P, d_P) (a MoLSimilarity "
            f"head); got {type(state).__name__} with leading dims {state.lead_shape}"
        )
    return state.components


def rescore_candidates(
    head: SimilarityHead,
    query_state: HeadState,
    item_state: HeadState,
    candidates: Tensor,
    k: int,
    exclude_positions: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact scores of per-query candidates and their deterministic top-k.

    Args:
        head: the similarity head.
        query_state: (B, ...) query state.
        item_state: (X, ...) corpus item state.
        candidates: (B, C) corpus positions, duplicates allowed, -1 = none.
        k: results kept.
        exclude_positions: (B, H) corpus positions to drop (-1 = none).

    Returns:
        (B, min(k, C)) scores and positions (empty slots ``(-inf, -1)``), and (B,) the number of
        distinct valid candidates per query.
    """
    positions = torch.sort(candidates, dim=1).values
    invalid = positions < 0
    invalid[:, 1:] |= positions[:, 1:] == positions[:, :-1]
    if exclude_positions is not None and exclude_positions.shape[1] > 0:
        excluded = torch.sort(exclude_positions, dim=1).values
        slot = torch.searchsorted(excluded, positions).clamp_max(excluded.shape[1] - 1)
        invalid |= excluded.gather(1, slot) == positions
    scores = head.score_pairs(query_state, item_state.gather(positions.clamp_min(0)))
    scores = scores.float().masked_fill(invalid, -math.inf)
    values, index = stable_topk(scores, k)  # no host sync: the stage can be a CUDA graph
    chosen = positions.gather(1, index).masked_fill(values == -math.inf, -1)
    return values, chosen, (~invalid).sum(dim=1)


def _available(num_items: int, exclude_positions: Tensor | None, like: Tensor) -> Tensor:
    """(B,) corpus items left per query after its (distinct, valid) exclusions."""
    if exclude_positions is None or exclude_positions.shape[1] == 0:
        return torch.full_like(like, num_items)
    excluded = torch.sort(exclude_positions, dim=1).values
    distinct = excluded >= 0
    distinct[:, 1:] &= excluded[:, 1:] != excluded[:, :-1]
    return num_items - distinct.sum(dim=1)


class _PairCandidates:
    """Per component-pair MIPS: one backend per item component j, searched by every query component i."""

    def __init__(self, k_per_pair: int, mips: MIPSFactory) -> None:
        if k_per_pair < 1:
            raise ValueError(f"k_per_pair must be >= 1, got {k_per_pair}")
        self.k_per_pair = k_per_pair
        self.mips = mips
        self.backends: list[MIPSBackend] = []

    def build(self, item_state: HeadState) -> None:
        components = _components(item_state, "item")
        self.backends = []
        for j in range(components.shape[1]):
            backend = self.mips()
            backend.build(components[:, j].contiguous())
            self.backends.append(backend)

    def __call__(self, query_state: HeadState, exclude_positions: Tensor | None, k: int) -> Tensor:
        """(B, P * k_per_pair) candidate positions (-1 = none); ``k`` does not change the budget."""
        queries = _components(query_state, "query")
        batch, num_query, dim = queries.shape
        rows = queries.reshape(batch * num_query, dim)
        exclude = None if exclude_positions is None else exclude_positions.repeat_interleave(num_query, dim=0)
        parts = [backend.search(rows, self.k_per_pair, exclude).view(batch, -1) for backend in self.backends]
        return torch.cat(parts, dim=1)


class _AverageCandidates:
    """MIPS between the mean query component and the mean item component."""

    def __init__(self, num_candidates: int, mips: MIPSFactory) -> None:
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        self.num_candidates = num_candidates
        self.mips = mips
        self.backend: MIPSBackend | None = None

    def build(self, item_state: HeadState) -> None:
        self.backend = self.mips()
        components = _components(item_state, "item")  # (X, P_X, d_P); averaged in fp32, 2^20 items at a time
        self.backend.build(torch.cat([part.float().mean(dim=1) for part in components.split(1 << 20)]))

    def __call__(self, query_state: HeadState, exclude_positions: Tensor | None, k: int) -> Tensor:
        """(B, max(num_candidates, k)) candidate positions (-1 = none)."""
        assert self.backend is not None
        queries = _components(query_state, "query").float().mean(dim=1)
        return self.backend.search(queries, max(self.num_candidates, k), exclude_positions)


CandidateSource = _PairCandidates | _AverageCandidates


class _CandidateIndex(RetrievalIndex):
    """Candidate generation + exact re-scoring, with exact search for queries short of candidates.

    The candidates of a query are the concatenation of what each of ``sources`` returns. With ``cuda_graphs``
    the candidate and re-scoring stage is replayed from a CUDA graph per batch shape
    (:class:`~rails.retrieval.indexes.graphs.GraphedStage`); the exact fallback stays eager.
    """

    def __init__(
        self,
        sources: list[CandidateSource],
        fallback_chunk_size: int = 65536,
        build_batch_size: int = 65536,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__(build_batch_size)
        self._exact = ExactTopK(chunk_size=fallback_chunk_size, fused=False)
        self.sources = sources
        self.cuda_graphs = cuda_graphs
        self._graphed = GraphedStage(self._stage, type(self).__name__) if cuda_graphs else None

    def _build(self) -> None:
        assert self.head is not None and self.item_state is not None
        _components(self.item_state, "item")
        self._exact.build(self.head, item_ids=self.item_ids, item_state=self.item_state)
        self._build_candidates(self.item_state)
        if self._graphed is not None:
            self._graphed.clear()  # captured graphs read the previous build's tensors

    def _build_candidates(self, item_state: HeadState) -> None:
        for source in self.sources:
            source.build(item_state)

    def _candidates(self, query_state: HeadState, k: int, exclude_positions: Tensor | None) -> Tensor:
        """(B, C) candidate positions of every source, concatenated (-1 = none)."""
        return torch.cat([source(query_state, exclude_positions, k) for source in self.sources], dim=1)

    def _stage(
        self, query_state: HeadState, k: int, exclude_positions: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Candidates and their exact re-scoring: fixed shapes, no host synchronisation (graph-capturable)."""
        head = self._require_built()
        assert self.item_state is not None
        candidates = self._candidates(query_state, k, exclude_positions)
        return rescore_candidates(
            head, query_state, self.item_state, candidates, min(k, self.num_items), exclude_positions
        )

    def _search(
        self, query_state: HeadState, k: int, exclude_positions: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        self._require_built()
        width = min(k, self.num_items)
        stage = self._stage if self._graphed is None else self._graphed
        scores, positions, count = stage(query_state, k, exclude_positions)
        self.exact_fallback = count < _available(self.num_items, exclude_positions, count).clamp_max(width)
        short = self.exact_fallback.nonzero()[:, 0]
        scores, positions = pad_results(scores, positions, width)  # fewer candidate slots than k
        if short.numel():
            exclude = None if exclude_positions is None else exclude_positions[short]
            exact_scores, exact_positions = self._exact._search(query_state.index(short), k, exclude)
            scores[short] = exact_scores.to(scores.dtype)
            positions[short] = exact_positions
        return scores, positions


class PerComponentTopK(_CandidateIndex):
    """Per component-pair MIPS top-k, union, re-score with the full MoL (spec §7.3, "MoLNaiveTopK").

    Args:
        k_per_pair: candidates per (query component, item component) pair; P * k_per_pair in total.
        mips: zero-argument factory of the MIPS backend (one per item component); default
            :class:`~rails.retrieval.mips.TorchMIPS`. In Hydra: a ``_partial_: true`` node.
        fallback_chunk_size: chunk size of the exact search used for queries short of candidates.
        build_batch_size: items encoded at once by :meth:`build`.
        cuda_graphs: replay the candidate + re-scoring stage from a CUDA graph per batch shape (CUDA only;
            a stage that cannot be captured runs eagerly, with a warning).
    """

    def __init__(
        self,
        k_per_pair: int = 10,
        mips: MIPSFactory | None = None,
        fallback_chunk_size: int = 65536,
        build_batch_size: int = 65536,
        cuda_graphs: bool = False,
    ) -> None:
        self.pairs = _PairCandidates(k_per_pair, mips or TorchMIPS)
        super().__init__([self.pairs], fallback_chunk_size, build_batch_size, cuda_graphs)


class AverageTopK(_CandidateIndex):
    """MIPS on averaged components, top-k', re-score with the full MoL (spec §7.4, "MoLAvgTopK").

    Args:
        num_candidates: k', candidates per query (raised to k when smaller).
        mips: zero-argument factory of the MIPS backend; default TorchMIPS.
        fallback_chunk_size: chunk size of the exact search used for queries short of candidates.
        build_batch_size: items encoded at once by :meth:`build`.
        cuda_graphs: replay the candidate + re-scoring stage from a CUDA graph per batch shape (CUDA only;
            a stage that cannot be captured runs eagerly, with a warning).
    """

    def __init__(
        self,
        num_candidates: int = 500,
        mips: MIPSFactory | None = None,
        fallback_chunk_size: int = 65536,
        build_batch_size: int = 65536,
        cuda_graphs: bool = False,
    ) -> None:
        self.average = _AverageCandidates(num_candidates, mips or TorchMIPS)
        super().__init__([self.average], fallback_chunk_size, build_batch_size, cuda_graphs)


class CombinedTopK(_CandidateIndex):
    """Union of the per-pair and the averaged candidates, re-scored (spec §7.5, "MoLCombTopK").

    Args:
        k_per_pair: candidates per component pair.
        num_candidates: candidates from the averaged components.
        mips: zero-argument factory of the MIPS backends; default TorchMIPS.
        fallback_chunk_size: chunk size of the exact search used for queries short of candidates.
        build_batch_size: items encoded at once by :meth:`build`.
        cuda_graphs: replay the candidate + re-scoring stage from a CUDA graph per batch shape (CUDA only;
            a stage that cannot be captured runs eagerly, with a warning).
    """

    def __init__(
        self,
        k_per_pair: int = 5,
        num_candidates: int = 200,
        mips: MIPSFactory | None = None,
        fallback_chunk_size: int = 65536,
        build_batch_size: int = 65536,
        cuda_graphs: bool = False,
    ) -> None:
        self.pairs = _PairCandidates(k_per_pair, mips or TorchMIPS)
        self.average = _AverageCandidates(num_candidates, mips or TorchMIPS)
        super().__init__([self.pairs, self.average], fallback_chunk_size, build_batch_size, cuda_graphs)
