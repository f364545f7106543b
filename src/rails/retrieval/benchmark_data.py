"""Problems for the top-k benchmark (:mod:`rails.retrieval.benchmark`): a MoL head, its corpus state, queries.

- ``structured`` (:func:`synthetic_problem`): item embeddings are a mixture of Gaussians on the sphere; each
  query mixes two items (two interests) plus noise, and the MoL head is first trained on (query, both items)
  pairs with in-batch negatives, so that its components and gating carry the structure a trained model has
  and approximate recall means something;
- ``random``: the untrained head over random clustered embeddings (approximate recall near zero, since
  nothing aligns the components);
- ``checkpoint`` (:func:`rails.retrieval.benchmark_checkpoint.checkpoint_problem`): the MoL head and item
  table of a rails-train checkpoint, queried by its own encoder on its data's test users.

Corpora are generated and encoded :data:`CHUNK` items at a time into one preallocated item state of the
requested dtype (bf16 on GPU: 100M x 4 x 64 x 2 B = 51 GB of components), never as a full fp32 copy; each
problem carries a fixed pool of queries, and a batch of B queries is the pool's first B rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import MoLItemState, MoLQueryState

CHUNK = 1 << 20  # corpus items generated and encoded at once


@dataclass
class Problem:
    """A head, its (X, ...) item state and a pool of (Q, D_q) query embeddings (batches take its first rows).

    ``user_ids`` (Q,): the query context of heads with user-id components (None: the head needs none).
    ``queries_from``: how the query pool was made (recorded with the results).
    """

    name: str
    head: MoLSimilarity
    item_state: MoLItemState
    queries: Tensor
    user_ids: Tensor | None = None
    queries_from: str = "synthetic"

    def encode(self, count: int) -> MoLQueryState:
        """The query state of the pool's first ``count`` queries (with their user ids when there are any)."""
        context = {} if self.user_ids is None else {"user_ids": self.user_ids[:count]}
        state = self.head.encode_queries(self.queries[:count], **context)
        assert isinstance(state, MoLQueryState)
        return state

    @property
    def setting(self) -> str:
        """The head shape, ``P_Q x P_X x d_P`` (e.g. "8x4x64")."""
        head = self.head
        return f"{head.num_query_components}x{head.num_item_components}x{head.component_dim}"


@dataclass(frozen=True)
class SyntheticSettings:
    """Synthetic corpora and the head trained on them (the benchmark's ``--width`` ... flags)."""

    width: int = 64  # D of queries and items
    hidden: int = 128  # gating MLP hidden width
    clusters: int = 1024  # structured: Gaussian clusters on the sphere
    spread: float = 0.6  # structured: within-cluster noise norm
    query_noise: float = 0.3  # query noise norm
    train_steps: int = 300  # structured: head training steps
    train_batch: int = 1024  # structured: queries per training step


def parse_setting(text: str) -> tuple[int, int, int]:
    """``"8x4x64"`` -> (P_Q, P_X, d_P); ValueError naming the text otherwise."""
    try:
        pq, px, dim = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise ValueError(f"settings entries must look like 8x4x64 (P_Q x P_X x d_P), got {text!r}") from err
    return pq, px, dim


def make_head(pq: int, px: int, dim: int, width: int, hidden: int, device: torch.device) -> MoLSimilarity:
    """An eval-mode MoL head (seed 0) with P_Q x P_X x d_P components over width-D queries and items."""
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=width,
        item_dim=width,
        num_query_components=pq,
        num_item_components=px,
        component_dim=dim,
        query_hidden_dim=4 * width,
        gating_query_hidden_dim=hidden,
        gating_item_hidden_dim=hidden,
        gating_qi_hidden_dim=hidden,
    )
    return head.to(device).eval()


def sphere(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)


def cluster_centers(clusters: int, width: int, seed: int, device: Any) -> Tensor:
    """(clusters, D) unit cluster centres (the same for every corpus size)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return sphere(torch.randn(clusters, width, generator=gen)).to(device)


def _generator(device: Any, seed: int) -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def clustered_chunk(centers: Tensor, chunk_index: int, count: int, spread: float, seed: int) -> Tensor:
    """(count, D) unit items of corpus chunk ``chunk_index`` (positions ``chunk_index * CHUNK ...``), drawn on
    the centres' device from a generator seeded by (seed, chunk): full chunks are the same for every corpus
    size."""
    device, width = centers.device, centers.shape[1]
    gen = _generator(device, seed * 1_000_003 + chunk_index)
    assign = torch.randint(0, centers.shape[0], (count,), generator=gen, device=device)
    noise = torch.randn(count, width, generator=gen, device=device) * (spread / math.sqrt(width))
    return sphere(centers[assign] + noise)


def clustered_items(
    num_items: int, width: int, clusters: int, spread: float, seed: int, device: Any
) -> Tensor:
    """(X, D) unit item embeddings: a mixture of ``clusters`` Gaussians on the sphere (small corpora only;
    :func:`synthetic_problem` streams the same chunks into the item state instead)."""
    centers = cluster_centers(clusters, width, seed, device)
    starts = range(0, num_items, CHUNK)
    return torch.cat(
        [clustered_chunk(centers, c, min(CHUNK, num_items - s), spread, seed) for c, s in enumerate(starts)]
    )


def two_interest_queries(
    items: Tensor, count: int, noise: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(n, D) queries mixing two random items plus noise, and their (n, 2) positive item positions."""
    positives = torch.randint(0, items.shape[0], (count, 2), generator=gen).to(items.device)
    jitter = torch.randn(count, items.shape[1], generator=gen).to(items.device) * (
        noise / math.sqrt(items.shape[1])
    )
    return sphere(items[positives].sum(dim=1) + jitter), positives


def train_head(head: MoLSimilarity, items: Tensor, steps: int, batch: int, noise: float, seed: int) -> float:
    """Train the head on two-interest queries (both items positive) with in-batch negatives; final loss."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    head.train()
    loss = torch.zeros(())
    for _ in range(steps):
        queries, positives = two_interest_queries(items, batch, noise, gen)
        candidates = items[positives.T.reshape(-1)]  # (2n, D): first items then second items
        scores = head(queries, candidates).scores.float()  # (n, 2n)
        log_probs = scores.log_softmax(dim=1)
        rows = torch.arange(batch, device=items.device)
        loss = -(log_probs[rows, rows] + log_probs[rows, rows + batch]).mean() / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    head.eval()
    return float(loss.detach())


@torch.no_grad()
def corpus_state(
    head: MoLSimilarity, chunks: Iterable[Tensor], num_items: int, dtype: torch.dtype
) -> MoLItemState:
    """Raw (c, D_x) item chunks -> one preallocated (X, ...) item state in ``dtype``.

    Each chunk is encoded and written in place, so a 100M-item bf16 corpus never exists in another dtype
    (or twice). ValueError when the chunks do not add up to ``num_items``.
    """
    components: Tensor | None = None
    gate: Tensor | None = None
    filled = 0
    for raw in chunks:
        state = head.encode_items(raw)
        count = raw.shape[0]
        if filled + count > num_items:
            raise ValueError(f"corpus_state: chunks hold more than num_items={num_items} items")
        if components is None or gate is None:
            device = state.components.device
            components = torch.empty((num_items, *state.components.shape[1:]), dtype=dtype, device=device)
            gate = torch.empty((num_items, state.gate.shape[1]), dtype=dtype, device=device)
        components[filled : filled + count] = state.components
        gate[filled : filled + count] = state.gate
        filled += count
    if components is None or gate is None or filled != num_items:
        raise ValueError(f"corpus_state: chunks hold {filled} items, expected num_items={num_items}")
    return MoLItemState(components, gate)


def synthetic_problem(
    kind: str,
    setting: str,
    num_items: int,
    settings: SyntheticSettings,
    dtype: torch.dtype,
    device: Any,
    num_queries: int = 256,
) -> Problem:
    """``structured``: a trained head over clustered items; ``random``: an untrained head, random-ish corpus.

    The corpus is generated and encoded CHUNK items at a time into a ``dtype`` state; the ``num_queries``
    query pool is built on the way (structured queries mix two corpus items anywhere in the corpus).
    """
    if num_items < 1 or num_queries < 1:
        raise ValueError(f"num_items and num_queries must be >= 1, got {num_items}, {num_queries}")
    pq, px, dim = parse_setting(setting)
    head = make_head(pq, px, dim, settings.width, settings.hidden, device)
    width = settings.width
    gen = torch.Generator(device="cpu").manual_seed(10_000)
    sizes = [(c, start, min(CHUNK, num_items - start)) for c, start in enumerate(range(0, num_items, CHUNK))]
    if kind == "random":
        centers = torch.randn(256, width, generator=torch.Generator().manual_seed(1)).to(device)

        def random_chunks() -> Iterator[Tensor]:
            for c, _, count in sizes:
                chunk_gen = _generator(device, 7_000_003 + c)
                assign = torch.randint(0, 256, (count,), generator=chunk_gen, device=centers.device)
                yield centers[assign] + 0.7 * torch.randn(
                    count, width, generator=chunk_gen, device=centers.device
                )

        queries = torch.randn(num_queries, width, generator=gen).to(device)
        return Problem(kind, head, corpus_state(head, random_chunks(), num_items, dtype), queries)
    if kind != "structured":
        raise ValueError(f"synthetic data must be 'structured' or 'random', got {kind!r}")
    centers = cluster_centers(settings.clusters, width, 1, device)
    t0 = time.perf_counter()
    train_items = clustered_chunk(centers, 0, sizes[0][2], settings.spread, 1)
    loss = train_head(
        head, train_items, settings.train_steps, settings.train_batch, settings.query_noise, seed=2
    )
    del train_items
    print(
        f"{setting} X={num_items}: trained the head for {settings.train_steps} steps in "
        f"{time.perf_counter() - t0:.1f} s, final loss {loss:.3f}"
    )
    positives = torch.randint(0, num_items, (num_queries, 2), generator=gen).to(device)
    jitter = torch.randn(num_queries, width, generator=gen).to(device) * (
        settings.query_noise / math.sqrt(width)
    )
    picked = torch.zeros(num_queries, 2, width, device=device)

    def structured_chunks() -> Iterator[Tensor]:
        for c, start, count in sizes:
            raw = clustered_chunk(centers, c, count, settings.spread, 1)
            inside = (positives >= start) & (positives < start + count)
            picked[inside] = raw[positives[inside] - start]
            yield raw

    state = corpus_state(head, structured_chunks(), num_items, dtype)
    return Problem(kind, head, state, sphere(picked.sum(dim=1) + jitter))
