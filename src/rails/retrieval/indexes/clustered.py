"""Clustered (IVF) approximate top-k for Mixture-of-Logits heads: probe lists by exact MoL, scan, re-score.

The paper's candidate stages (:mod:`rails.retrieval.indexes.approximate`) read the whole corpus and rank it
by a fixed, query-blind proxy (the averaged components); their recall drops as the corpus grows. This index
reads a small fraction of the corpus and ranks it by a proxy fitted to each query:

Build (once per corpus; host synchronisations allowed):
    1. item *keys* ``k(x) = concat_j g_j(x)`` (X, P_X * d_P), the item components side by side;
    2. k-means over the keys (:func:`~rails.retrieval.indexes.inverted_lists.kmeans`, ``num_lists``
       clusters, fitted on a sample) and padded inverted lists of at most ``list_size`` members;
    3. ``representatives`` members of every list (a random sample of it), whose item state is kept.

Search (fixed-shape tensors, no host synchronisation until the exact-fallback check):
    1. *query key* ``Q_j = sum_i w_ij f_i(q)``: ``w`` (P_Q, P_X) is the mean gating weights ``pi`` of the
       query's ``weight_top`` best of ``reference_items`` random corpus items (full MoL, ``head.score``), so
       ``<Q, k(x)> = sum_ij w_ij <f_i(q), g_j(x)>`` is the MoL logit mixture with the gating frozen at what
       the query's neighbourhood uses (uniform ``w`` would be AverageTopK's score);
    2. *probes*: the ``shortlist`` lists of largest ``<Q, centroid>``, re-ranked by the exact MoL of their
       representatives (the best one counts); the ``num_probes`` best are scanned;
    3. the members of the probed lists scored by ``<Q, k(x)>``; the ``num_candidates`` best are re-scored
       with the full head and the top k returned (:func:`~rails.retrieval.indexes.approximate.rescore_candidates`).

Queries left with fewer than k candidates (after exclusions) are answered by exact search and flagged in
``exact_fallback``, as in every approximate index. Probing every list with ``num_candidates`` >= X gives the
exact top k. Cost per query: ``reference_items + shortlist * representatives + num_candidates`` full MoL
scores, L centroid and ``num_probes * list_size`` member inner products of P_X * d_P. Memory: the lists
hold member positions only ((L, S) int64, S <= ``list_size_factor`` x the mean list); the scan reads the item
components of the corpus state itself (one converted copy only when ``dtype`` differs from the state's).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import HeadState, MoLItemState, MoLQueryState
from rails.retrieval.indexes.approximate import _CandidateIndex, _components
from rails.retrieval.indexes.inverted_lists import InvertedLists, kmeans
from rails.retrieval.mips import resolve_dtype


def mol_pair_weights(head: MoLSimilarity, query_state: MoLQueryState, item_state: MoLItemState) -> Tensor:
    """Gating weights pi (B, N, P) of (B, ...) queries against their own (B, N, ...) items (eval mode).

    In float32 whatever the states' dtype: a head trained under bf16 autocast (``autocast_bf16``) hands out
    bf16 states, while its gating Linears stay float32.
    """
    queries, components = query_state.components.float(), item_state.components.float()
    logits = torch.einsum("bid,bxjd->bxij", queries, components).flatten(-2) / head.temperature
    gate = head.gating(query_state.gate.float()[:, None, :], item_state.gate.float(), logits)
    return head.mixer(gate)


class _ClusteredCandidates:
    """Inverted lists over concatenated item components, probed by exact MoL on list representatives."""

    def __init__(
        self,
        num_lists: int | None,
        num_probes: int,
        num_candidates: int,
        representatives: int,
        shortlist: int | None,
        reference_items: int,
        weight_top: int,
        list_size_factor: float,
        kmeans_iterations: int,
        kmeans_sample: int,
        seed: int,
        dtype: torch.dtype | None,
    ) -> None:
        for name, value in (
            ("num_probes", num_probes),
            ("num_candidates", num_candidates),
            ("representatives", representatives),
            ("reference_items", reference_items),
            ("weight_top", weight_top),
            ("kmeans_sample", kmeans_sample),
        ):
            if value < 1:
                raise ValueError(f"ClusteredTopK {name} must be >= 1, got {value}")
        for name, optional in (("num_lists", num_lists), ("shortlist", shortlist)):
            if optional is not None and optional < 1:
                raise ValueError(f"ClusteredTopK {name} must be >= 1 or null, got {optional}")
        if kmeans_iterations < 0:
            raise ValueError(f"ClusteredTopK kmeans_iterations must be >= 0, got {kmeans_iterations}")
        if not list_size_factor >= 1.0:
            raise ValueError(f"ClusteredTopK list_size_factor must be >= 1, got {list_size_factor}")
        self.num_lists = num_lists
        self.num_probes = num_probes
        self.num_candidates = num_candidates
        self.representatives = representatives
        self.shortlist = shortlist
        self.reference_items = reference_items
        self.weight_top = weight_top
        self.list_size_factor = list_size_factor
        self.kmeans_iterations = kmeans_iterations
        self.kmeans_sample = kmeans_sample
        self.seed = seed
        self.dtype = dtype
        self.head: MoLSimilarity | None = None
        self.lists: InvertedLists | None = None
        self.rep_state: MoLItemState | None = None
        self.ref_state: MoLItemState | None = None

    def build(self, head: MoLSimilarity, item_state: MoLItemState) -> None:
        components = _components(item_state, "item")
        num_items = components.shape[0]
        keys = components.reshape(num_items, -1)
        clusters = self.num_lists or max(1, round(num_items / 1000))
        _, labels = kmeans(keys, clusters, self.kmeans_iterations, self.kmeans_sample, self.seed)
        clusters = min(clusters, num_items)
        list_size = max(1, math.ceil(self.list_size_factor * num_items / clusters))
        self.lists = InvertedLists(keys, labels, clusters, list_size, self.dtype, self.seed)
        reps = self.lists.representatives(self.representatives).flatten()  # (L * m,), list-major
        self.rep_state = item_state.gather(reps)
        gen = torch.Generator().manual_seed(self.seed + 1)
        references = torch.randperm(num_items, generator=gen)[: self.reference_items]
        self.ref_state = item_state.gather(references.to(item_state.device))
        self.head = head

    def __call__(self, query_state: HeadState, exclude_positions: Tensor | None, k: int) -> Tensor:
        """(B, max(num_candidates, k)) candidate positions (-1 = none)."""
        query_keys, probes = self.probe(query_state)
        assert self.lists is not None
        return self.lists.scan(query_keys, probes, max(self.num_candidates, k), exclude_positions)

    def probe(self, query_state: HeadState) -> tuple[Tensor, Tensor]:
        """(B, P_X * d_P) query keys and (B, num_probes) probed list indices (search steps 1-2)."""
        lists, reps, head = self.lists, self.rep_state, self.head
        assert lists is not None and reps is not None and self.ref_state is not None and head is not None
        if not isinstance(query_state, MoLQueryState):
            _components(query_state, "query")  # raises the package's error for non-MoL states
        assert isinstance(query_state, MoLQueryState)
        queries = query_state.components
        batch, num_query, _ = queries.shape
        count, m = lists.num_lists, self.representatives
        # query key: gating weights of the best reference items
        phi = head.score(query_state, self.ref_state).float()  # (B, R)
        top = torch.topk(phi, min(self.weight_top, phi.shape[1]), dim=1).indices  # (B, T)
        weights = mol_pair_weights(head, query_state, self.ref_state.gather(top))  # (B, T, P)
        w = weights.float().mean(dim=1).view(batch, num_query, -1)  # (B, P_Q, P_X)
        query_keys = torch.einsum("bij,bid->bjd", w, queries.float()).reshape(batch, -1)
        # probes: lists ranked by the exact MoL of their representatives (of a shortlist, when given)
        if self.shortlist is None or self.shortlist >= count:
            rep_scores = head.score(query_state, reps).float().view(batch, count, m)
            shortlist = None
        else:
            centroid_scores = (query_keys.to(lists.centroids.dtype) @ lists.centroids.T).float()
            shortlist = torch.topk(centroid_scores, self.shortlist, dim=1).indices  # (B, s)
            slots = (shortlist[:, :, None] * m + torch.arange(m, device=shortlist.device)).flatten(1)
            rep_scores = head.score_pairs(query_state, reps.gather(slots)).float().view(batch, -1, m)
        probes = torch.topk(rep_scores.amax(dim=2), min(self.num_probes, rep_scores.shape[1]), dim=1).indices
        if shortlist is not None:
            probes = shortlist.gather(1, probes)
        return query_keys, probes


class ClusteredTopK(_CandidateIndex):
    """IVF candidates over concatenated item components, probed by exact MoL, re-scored (module doc).

    Args:
        num_lists: k-means clusters (None: X / 1000, rounded). More lists: finer probes, more centroids.
        num_probes: lists scanned per query.
        num_candidates: members kept from the scan and re-scored with the full MoL (raised to k).
        representatives: members per list scored with the full MoL to rank the lists (the best one counts).
        shortlist: lists whose representatives are scored, pre-selected by ``<query key, list centroid>``
            (None: every list's; L * representatives full MoL scores per query, the dominant cost on
            large corpora).
        reference_items: random corpus items scored with the full MoL to find the query's gating weights.
        weight_top: best-scoring reference items whose mean gating weights make the query key.
        list_size_factor: lists hold at most ``factor * X / num_lists`` members; larger clusters are cut
            into several lists (padding and scan cost grow with the largest list).
        kmeans_iterations: Lloyd iterations at build.
        kmeans_sample: keys the centroids are fitted on (at least 32 per list).
        seed: k-means sample and initialisation, list order (representatives).
        dtype: storage and scan dtype of the keys ("bfloat16" on GPU; null = the item components' dtype).
        fallback_chunk_size: chunk size of the exact search used for queries short of candidates.
        build_batch_size: items encoded at once by :meth:`build`.
        cuda_graphs: replay the candidate + re-scoring stage from a CUDA graph per batch shape (CUDA only;
            a stage that cannot be captured runs eagerly, with a warning).
    """

    def __init__(
        self,
        num_lists: int | None = None,
        num_probes: int = 16,
        num_candidates: int = 2000,
        representatives: int = 8,
        shortlist: int | None = 128,
        reference_items: int = 4096,
        weight_top: int = 8,
        list_size_factor: float = 2.0,
        kmeans_iterations: int = 8,
        kmeans_sample: int = 262144,
        seed: int = 0,
        dtype: str | None = None,
        fallback_chunk_size: int = 65536,
        build_batch_size: int = 65536,
        cuda_graphs: bool = False,
    ) -> None:
        self.clustered = _ClusteredCandidates(
            num_lists,
            num_probes,
            num_candidates,
            representatives,
            shortlist,
            reference_items,
            weight_top,
            list_size_factor,
            kmeans_iterations,
            kmeans_sample,
            seed,
            resolve_dtype(dtype, "ClusteredTopK dtype"),
        )
        super().__init__([], fallback_chunk_size, build_batch_size, cuda_graphs)

    def _build_candidates(self, item_state: HeadState) -> None:
        if not isinstance(self.head, MoLSimilarity) or not isinstance(item_state, MoLItemState):
            raise ValueError(
                f"ClusteredTopK needs a MoLSimilarity head and MoL item states, got "
                f"{type(self.head).__name__} and {type(item_state).__name__}"
            )
        self.clustered.build(self.head, item_state)

    def _candidates(self, query_state: HeadState, k: int, exclude_positions: Tensor | None) -> Tensor:
        return self.clustered(query_state, exclude_positions, k)

    @torch.no_grad()
    def recall_losses(self, query_state: HeadState, truth_positions: Tensor) -> dict[str, float]:
        """Where the search loses the true top-k: the share of ``truth_positions`` (B, k) corpus positions
        that the probed lists hold (``probed``) and that the candidates keep (``candidates``); the re-scoring
        keeps every candidate it is given, so ``candidates`` is the recall of the index.
        """
        clustered = self.clustered
        assert clustered.lists is not None
        query_keys, probes = clustered.probe(query_state)
        members = clustered.lists.members[probes].flatten(1)  # (B, n * S)
        candidates = clustered.lists.scan(
            query_keys, probes, max(clustered.num_candidates, truth_positions.shape[1])
        )
        truth = truth_positions.to(members.device)

        def held(pool: Tensor) -> float:
            ordered = torch.sort(pool, dim=1).values
            slot = torch.searchsorted(ordered, truth.contiguous()).clamp_max(ordered.shape[1] - 1)
            return float((ordered.gather(1, slot) == truth).float().mean())

        return {"probed": held(members), "candidates": held(candidates)}
