"""Problems for the top-k benchmark (:mod:`rails.retrieval.benchmark`): a MoL head, its corpus state, queries.

- ``structured`` (:func:`synthetic_problem`): item embeddings are a mixture of Gaussians on the sphere; each
  query mixes two items (two interests) plus noise, and the MoL head is first trained on (query, both items)
  pairs with in-batch negatives, so that its components and gating carry the structure a trained model has
  and approximate recall means something;
- ``random``: the untrained head over random clustered embeddings (approximate recall near zero, since
  nothing aligns the components);
- ``checkpoint`` (:func:`checkpoint_problem`): the MoL head and item table of a rails-train checkpoint
  (``rails_config`` + ``state_dict``); queries are random items plus noise, and the corpus is the table
  tiled to the requested size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from torch import Tensor

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.states import MoLItemState
from rails.retrieval.corpus import encode_corpus


@dataclass
class Problem:
    """A head, its (X, ...) item state and a query sampler: ``queries(n, seed) -> (n, D_q)``."""

    name: str
    head: MoLSimilarity
    item_state: MoLItemState
    queries: Callable[[int, int], Tensor]


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


def clustered_items(
    num_items: int, width: int, clusters: int, spread: float, seed: int, device: Any
) -> Tensor:
    """(X, D) unit item embeddings: a mixture of ``clusters`` Gaussians on the sphere."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centers = sphere(torch.randn(clusters, width, generator=gen)).to(device)
    parts = []
    for start in range(0, num_items, 1 << 20):
        count = min(1 << 20, num_items - start)
        assign = torch.randint(0, clusters, (count,), generator=gen).to(device)
        noise = torch.randn(count, width, generator=gen).to(device) * (spread / math.sqrt(width))
        parts.append(sphere(centers[assign] + noise))
    return torch.cat(parts)


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
def corpus_state(head: MoLSimilarity, items: Tensor, dtype: torch.dtype) -> MoLItemState:
    """(X, D_x) embeddings -> (X, ...) item state in ``dtype``, encoded 2^18 items at a time."""
    state = encode_corpus(head, items, 1 << 18)
    assert isinstance(state, MoLItemState)
    return state.to(dtype)


def synthetic_problem(
    kind: str, setting: str, num_items: int, settings: SyntheticSettings, dtype: torch.dtype, device: Any
) -> Problem:
    """``structured``: a trained head over clustered items; ``random``: an untrained head, random-ish corpus."""
    pq, px, dim = parse_setting(setting)
    head = make_head(pq, px, dim, settings.width, settings.hidden, device)
    if kind == "random":
        gen = torch.Generator(device="cpu").manual_seed(1)
        centers = torch.randn(256, settings.width, generator=gen)
        assign = torch.randint(0, 256, (num_items,), generator=gen)
        items = (centers[assign] + 0.7 * torch.randn(num_items, settings.width, generator=gen)).to(device)

        def random_queries(count: int, seed: int) -> Tensor:
            gen = torch.Generator().manual_seed(seed)
            return torch.randn(count, settings.width, generator=gen).to(device)

        return Problem(kind, head, corpus_state(head, items, dtype), random_queries)
    if kind != "structured":
        raise ValueError(f"synthetic data must be 'structured' or 'random', got {kind!r}")
    items = clustered_items(num_items, settings.width, settings.clusters, settings.spread, 1, device)
    t0 = time.perf_counter()
    loss = train_head(head, items, settings.train_steps, settings.train_batch, settings.query_noise, seed=2)
    print(
        f"{setting} X={num_items}: trained the head for {settings.train_steps} steps in "
        f"{time.perf_counter() - t0:.1f} s, final loss {loss:.3f}"
    )

    def structured_queries(count: int, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(10_000 + seed)
        return two_interest_queries(items, count, settings.query_noise, gen)[0]

    return Problem(kind, head, corpus_state(head, items, dtype), structured_queries)


def checkpoint_problem(
    checkpoint: Mapping[str, Any],
    num_items: int,
    noise: float,
    dtype: torch.dtype,
    device: Any,
    source: str = "checkpoint",
) -> Problem:
    """MoL head + item table of a loaded rails-train checkpoint; queries = random items plus noise.

    Raises:
        ValueError: naming ``source`` when the checkpoint has no MoL head node or no item table.
    """
    if "rails_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{source}: not a rails-train checkpoint (needs rails_config and state_dict)")
    node = checkpoint["rails_config"].get("model", {}).get("similarity")
    if not isinstance(node, Mapping) or not str(node.get("_target_", "")).endswith("MoLSimilarity"):
        raise ValueError(f"{source}: model.similarity is not a MoLSimilarity node: {node!r}")
    head = hydra.utils.instantiate(dict(node))
    state = checkpoint["state_dict"]
    head.load_state_dict(
        {k[len("similarity.") :]: v for k, v in state.items() if k.startswith("similarity.")}
    )
    head = head.to(device).eval()
    table = state.get("items.table.weight")
    if table is None:
        raise ValueError(f"{source}: state_dict has no 'items.table.weight' item table")
    table = table[1:].float().to(device)  # row 0 = padding
    reps = math.ceil(num_items / table.shape[0])
    items = table.repeat(reps, 1)[:num_items] if reps > 1 else table
    scale = float(items.norm(dim=1).mean())

    def checkpoint_queries(count: int, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        picks = torch.randint(0, table.shape[0], (count,), generator=gen).to(device)
        jitter = torch.randn(count, table.shape[1], generator=gen).to(device)
        return table[picks] + jitter * (noise * scale / math.sqrt(table.shape[1]))

    return Problem("checkpoint", head, corpus_state(head, items, dtype), checkpoint_queries)
