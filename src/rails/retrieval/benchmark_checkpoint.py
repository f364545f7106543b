"""The ``checkpoint`` problem of the top-k benchmark: a trained MoL model, queried by its own users.

From a rails-train checkpoint (``rails_config`` + ``state_dict``): the MoL head, its item table as the corpus (at
the table's own size, or tiled to a requested size) and the queries the model makes at evaluation time, when
the caller rebuilt them from the run's data (:func:`rails.runs.rebuild.trained_test_queries`: the encoder over each
test user's history, with the users' ids for heads that have user-id components). Without them the queries
are random items plus noise (a proxy, recorded as such in ``Problem.queries_from``), with random user ids
where the head needs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import hydra
import torch
from torch import Tensor

from rails.models.similarity.mol import MoLSimilarity
from rails.models.similarity.mol_cosine import BLEND_DEFAULTS, MoLWithCosine
from rails.retrieval.benchmark_data import CHUNK, Problem, corpus_state


def checkpoint_head(checkpoint: Mapping[str, Any], source: str) -> MoLSimilarity:
    """The checkpoint's MoL head with its trained weights (CPU, train mode as built).

    A head that ranks by MoL + cosine (``model/similarity_blend=cosine``) gives its MoL part, with the same
    weights: the exact and approximate MoL searches are what the benchmark times, and the gating is MoL's.

    Raises:
        ValueError: naming ``source`` when the checkpoint is not a rails-train one or its head is not MoL.
    """
    if "rails_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{source}: not a rails-train checkpoint (needs rails_config and state_dict)")
    node = checkpoint["rails_config"].get("model", {}).get("similarity")
    target = str(node.get("_target_", "")) if isinstance(node, Mapping) else ""
    # a blend's MoL part: what the kernels search and what the gating uses
    if target.endswith(f".{MoLWithCosine.__name__}"):
        node = {k: v for k, v in node.items() if k not in BLEND_DEFAULTS}
        target = node["_target_"] = f"{MoLSimilarity.__module__}.{MoLSimilarity.__name__}"
    if not target.endswith(f".{MoLSimilarity.__name__}"):
        raise ValueError(f"{source}: model.similarity is not a MoLSimilarity node: {node!r}")
    # the benchmark's own rows decide what is compiled (as for the synthetic heads): the stored flag is dropped
    head = hydra.utils.instantiate({**dict(node), "compile_mixing": False})
    state = checkpoint["state_dict"]
    head.load_state_dict(
        {k[len("similarity.") :]: v for k, v in state.items() if k.startswith("similarity.")}
    )
    return head


def checkpoint_problem(
    checkpoint: Mapping[str, Any],
    num_items: int | None,
    noise: float,
    dtype: torch.dtype,
    device: Any,
    source: str = "checkpoint",
    num_queries: int = 256,
    name: str = "checkpoint",
    user_queries: tuple[Tensor, Tensor] | None = None,
) -> Problem:
    """MoL head + item table of a loaded rails-train checkpoint, queried by ``user_queries`` ((Q, D) test-user
    embeddings and (Q,) user ids, :func:`rails.runs.rebuild.trained_test_queries`) or, without them, by random
    items plus ``noise``.

    The corpus is the item table (``num_items`` None: its own size) or the table tiled to ``num_items``.

    Raises:
        ValueError: naming ``source`` when the checkpoint has no MoL head node or no item table.
    """
    head = checkpoint_head(checkpoint, source).to(device).eval()
    table = checkpoint["state_dict"].get("items.table.weight")
    if table is None:
        raise ValueError(f"{source}: state_dict has no 'items.table.weight' item table")
    table = table[1:].float().to(device)  # row 0 = padding
    rows = table.shape[0]
    num_items = rows if num_items is None else num_items
    tiled = table.repeat(max(1, CHUNK // rows), 1)  # whole tables per chunk

    def table_chunks() -> Iterator[Tensor]:
        for start in range(0, num_items, tiled.shape[0]):
            yield tiled[: min(tiled.shape[0], num_items - start)]

    if user_queries is not None:
        queries, user_ids = (t.to(device) for t in user_queries)
        queries_from = "test users (the checkpoint's encoder)"
    else:
        gen = torch.Generator().manual_seed(0)
        picks = torch.randint(0, rows, (num_queries,), generator=gen).to(device)
        jitter = torch.randn(num_queries, table.shape[1], generator=gen).to(device)
        scale = float(table.norm(dim=1).mean())
        queries = table[picks] + jitter * (noise * scale / math.sqrt(table.shape[1]))
        user_ids = None
        if head.uid_components is not None:  # any id works: rows are id mod H + 1
            user_ids = torch.randint(1, 1 << 20, (num_queries,), generator=gen).to(device)
        queries_from = f"random items + noise {noise}"
    state = corpus_state(head, table_chunks(), num_items, dtype)
    return Problem(name, head, state, queries, user_ids, queries_from)
