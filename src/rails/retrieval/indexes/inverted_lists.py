"""Inverted lists over item key vectors: k-means at build time, a fixed-shape probe-and-scan at search time.

The candidate stage of :class:`~rails.retrieval.indexes.clustered.ClusteredTopK` (an IVF index, as in faiss'
``IndexIVFFlat``, but in PyTorch on the corpus's device and without host synchronisations when searched):

- :func:`kmeans`: Lloyd's k-means on a seeded sample of the keys (chunked assignments, empty clusters
  re-seeded from the sample), then every key assigned to its nearest centroid;
- :class:`InvertedLists`: the clusters as *padded lists* of at most ``list_size`` members (a larger
  cluster is cut into several lists), so the lists are one ``(L, S)`` position tensor (-1 = padding) over
  the corpus's ``(X, D)`` keys (not copied unless the scan dtype differs); members of a list are in a seeded
  random order, and
  :meth:`InvertedLists.representatives` picks m evenly spaced members of each list (a random sample of it);
- :meth:`InvertedLists.scan`: the members of each query's probed lists scored by ``<query, key>``, the
  ``num_candidates`` best kept (fixed-size tensors). On CUDA one Triton kernel scores the probed lists where
  they lie (:mod:`rails.kernels.list_scan_triton`); elsewhere PyTorch gathers their keys a fixed number of
  probes at a time.

Build-time work (k-means, sorting members into lists) synchronises with the host; search does not.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rails.kernels import triton_usable


def _nearest(vectors: Tensor, centroids: Tensor, max_elements: int) -> Tensor:
    """(N,) index of the nearest centroid (L2) of each of (N, D) vectors; about ``max_elements`` distances
    at a time."""
    half_norms = 0.5 * centroids.float().pow(2).sum(dim=1)
    chunk = max(1, max_elements // centroids.shape[0])
    labels = []
    for part in vectors.split(chunk):
        labels.append((part.to(centroids.dtype) @ centroids.T).float().sub_(half_norms).argmax(dim=1))
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64, device=vectors.device)


def kmeans(
    vectors: Tensor,
    num_clusters: int,
    iterations: int = 10,
    sample_size: int = 262144,
    seed: int = 0,
    max_elements: int = 1 << 28,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means: centroids fitted on a seeded sample, then every vector assigned.

    Args:
        vectors: (N, D) keys (any float dtype; statistics in fp32).
        num_clusters: L (clipped to N).
        iterations: Lloyd iterations on the sample.
        sample_size: vectors the centroids are fitted on (at least 32 per cluster; all when N is smaller).
        seed: seed of the sample, the initial centroids and the re-seeding of empty clusters.
        max_elements: vector-centroid distances computed at once (memory bound).

    Distances are fp32 matmuls with TF32 allowed on CUDA (the assignment of 100M keys to 100K centroids is
    5 PFLOP); the previous matmul precision is restored.

    Returns:
        (L, D) float32 centroids and (N,) int64 cluster of every vector.
    """
    count = vectors.shape[0]
    if count < 1 or num_clusters < 1:
        raise ValueError(f"kmeans needs >= 1 vector and >= 1 cluster, got {count} and {num_clusters}")
    if vectors.device.type != "cuda":  # CPU matmul precision stays the caller's (the same results anywhere)
        return _lloyd(vectors, num_clusters, iterations, sample_size, seed, max_elements)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 distances: only the nearest centroid matters
    try:
        return _lloyd(vectors, num_clusters, iterations, sample_size, seed, max_elements)
    finally:
        torch.set_float32_matmul_precision(previous)


def _lloyd(
    vectors: Tensor, num_clusters: int, iterations: int, sample_size: int, seed: int, max_elements: int
) -> tuple[Tensor, Tensor]:
    """:func:`kmeans` at the caller's matmul precision."""
    count = vectors.shape[0]
    num_clusters = min(num_clusters, count)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pick = torch.randperm(count, generator=gen)[: max(sample_size, 32 * num_clusters)].to(vectors.device)
    sample = vectors[pick].float()
    centroids = sample[:num_clusters].clone()  # pick is a random permutation: random distinct points
    for _ in range(iterations):
        labels = _nearest(sample, centroids, max_elements)
        sums = torch.zeros_like(centroids).index_add_(0, labels, sample)
        sizes = torch.bincount(labels, minlength=num_clusters).float()[:, None]
        reseed = sample[torch.randint(0, sample.shape[0], (num_clusters,), generator=gen).to(sample.device)]
        centroids = torch.where(sizes > 0, sums / sizes.clamp_min(1.0), reseed)
    return centroids, _nearest(vectors, centroids, max_elements)


class InvertedLists:
    """Padded inverted lists of item keys, searched with fixed-shape tensors.

    Args:
        keys: (X, D) item key vectors (stored in ``dtype``, default their own).
        labels: (X,) cluster of every item (e.g. from :func:`kmeans`), in ``0..num_clusters - 1``.
        num_clusters: number of clusters.
        list_size: S, the most members per list; a larger cluster becomes ceil(size / S) lists. None: the
            largest cluster's size (one list per non-empty cluster).
        dtype: scan dtype of the keys and centroids (None: the keys' dtype; another dtype makes one
            converted (X, D) copy, e.g. bf16 keys of an fp32 corpus).
    """

    def __init__(
        self,
        keys: Tensor,
        labels: Tensor,
        num_clusters: int,
        list_size: int | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        if keys.dim() != 2 or labels.shape != keys.shape[:1]:
            raise ValueError(
                f"keys must be (X, D) and labels (X,), got {tuple(keys.shape)} and {tuple(labels.shape)}"
            )
        device = keys.device
        sizes = torch.bincount(labels, minlength=num_clusters)
        if list_size is None:
            list_size = int(sizes.max())
        if list_size < 1:
            raise ValueError(f"list_size must be >= 1, got {list_size}")
        self.list_size = list_size
        parts = (sizes + list_size - 1) // list_size  # lists per cluster (0 for an empty cluster)
        shuffle = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed)).to(device)
        order = shuffle[torch.sort(labels[shuffle], stable=True).indices]  # by cluster, random inside
        cluster_start = torch.cumsum(sizes, 0) - sizes
        rank = torch.arange(labels.numel(), device=device) - cluster_start[labels[order]]  # rank in cluster
        # a cluster's members are dealt round-robin over its lists: every list gets a random share
        list_of = (torch.cumsum(parts, 0) - parts)[labels[order]] + rank % parts[labels[order]]
        slot = rank // parts[labels[order]]
        num_lists = int(parts.sum())
        self.members = torch.full((num_lists, list_size), -1, dtype=torch.int64, device=device)
        """(L, S) corpus positions of each list's members, -1 = padding (after the list's members)."""
        self.members[list_of, slot] = order
        self.fill = torch.bincount(list_of, minlength=num_lists)
        """(L,) members per list (>= 1)."""
        stored = keys.to(dtype) if dtype is not None else keys  # the caller's tensor when no conversion
        self.keys = stored
        """(X, D) corpus keys in the scan dtype: a reference to ``keys`` when their dtype is the scan dtype
        (no copy), else one converted copy; members are read from it by position."""
        sums = torch.zeros(num_lists, keys.shape[1], device=device)
        for part in torch.arange(labels.numel(), device=device).split(1 << 20):  # no fp32 copy of all keys
            sums.index_add_(0, list_of[part], keys[order[part]].float())
        self.centroids = (sums / self.fill[:, None].float()).to(stored.dtype)
        """(L, D) mean key of each list (<query, centroid> = the mean score of its members)."""

    @property
    def num_lists(self) -> int:
        """L, the number of lists."""
        return self.members.shape[0]

    def representatives(self, count: int) -> Tensor:
        """(L, count) corpus positions: evenly spaced members of each (randomly ordered) list, repeats
        where a list has fewer members."""
        if count < 1:
            raise ValueError(f"representatives count must be >= 1, got {count}")
        steps = torch.arange(count, device=self.fill.device)
        slots = (steps[None, :] * self.fill[:, None]) // count  # (L, count), < fill
        return self.members.gather(1, slots)

    def scan(
        self,
        queries: Tensor,
        lists: Tensor,
        num_candidates: int,
        exclude_positions: Tensor | None = None,
        scan_elements: int = 1 << 28,
    ) -> Tensor:
        """Candidate positions of (B, D) query keys: the best-scoring members of each query's probed lists.

        Args:
            queries: (B, D) query keys.
            lists: (B, n) probed list indices per query (distinct within a row).
            num_candidates: C, members kept per query.
            exclude_positions: (B, H) corpus positions never returned (-1 = none).
            scan_elements: PyTorch path: about B * probes * S * D key elements gathered at once (memory
                bound). With Triton (CUDA) one kernel reads the probed keys in place instead
                (:mod:`rails.kernels.list_scan_triton`) and nothing is gathered.

        Returns:
            (B, min(C, n * S)) int64 positions, best first (-1 = padding or nothing left).
        """
        queries = queries.to(self.keys.dtype)
        batch, dim = queries.shape
        num_probes = lists.shape[1]
        excluded = None
        if exclude_positions is not None and exclude_positions.shape[1] > 0:
            excluded = torch.sort(exclude_positions.to(queries.device), dim=1).values
        keep = min(num_candidates, num_probes * self.list_size)
        if triton_usable(queries.device):  # the probed members' keys read in place, padding skipped
            from rails.kernels.list_scan_triton import list_scan_scores

            scores = list_scan_scores(queries, lists, self.members, self.keys, self.fill)
            members = self.members[lists].flatten(1)  # (B, n S)
            best_scores, index = torch.topk(
                _mask_excluded(scores, members, excluded), min(keep, scores.shape[1]), dim=1
            )
            return members.gather(1, index).masked_fill(best_scores == -math.inf, -1)
        step = max(1, min(num_probes, scan_elements // max(1, batch * self.list_size * dim)))
        best_scores = torch.empty(batch, 0, device=queries.device)
        best = torch.empty(batch, 0, dtype=torch.int64, device=queries.device)
        for start in range(0, num_probes, step):  # a fixed number of steps: no host synchronisation
            probed = lists[:, start : start + step]  # (B, n')
            members = self.members[probed].flatten(1)  # (B, n' S)
            keys = self.keys[members.clamp_min(0)]  # (B, n' S, D); padding rows masked below
            scores = (
                torch.bmm(keys, queries[:, :, None]).squeeze(2).float().masked_fill(members < 0, -math.inf)
            )
            best_scores = torch.cat([best_scores, _mask_excluded(scores, members, excluded)], dim=1)
            best = torch.cat([best, members], dim=1)
            best_scores, index = torch.topk(best_scores, min(keep, best_scores.shape[1]), dim=1)
            best = best.gather(1, index)
        return best.masked_fill(best_scores == -math.inf, -1)


def _mask_excluded(scores: Tensor, members: Tensor, excluded: Tensor | None) -> Tensor:
    """(B, N) scores with ``-inf`` where (B, N) members are in the row's sorted (B, H) exclusions."""
    if excluded is None:
        return scores
    slot = torch.searchsorted(excluded, members).clamp_max(excluded.shape[1] - 1)
    return scores.masked_fill(excluded.gather(1, slot) == members, -math.inf)
