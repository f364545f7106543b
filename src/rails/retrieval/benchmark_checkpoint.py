"""The ``checkpoint`` problem of the top-k benchmark: a trained MoL model, queried by its own users.

From a rails-train checkpoint (``rails_config`` + ``state_dict``): the MoL head, its item table as the corpus (at
the table's own size, or tiled to a requested size) and, given the data the run trained on (``data_root``), the
queries the model makes at evaluation time: the encoder over each test user's history
(``RetrievalModule.embed_queries``), with the users' ids for heads that have user-id components. Without the
data the queries are random items plus noise (a proxy, recorded as such in ``Problem.queries_from``), with
random user ids where the head needs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import hydra
import torch
from omegaconf import OmegaConf
from torch import Tensor

from rails.models.similarity.mol import MoLSimilarity
from rails.retrieval.benchmark_data import CHUNK, Problem, corpus_state


def checkpoint_head(checkpoint: Mapping[str, Any], source: str) -> MoLSimilarity:
    """The checkpoint's MoL head with its trained weights (CPU, train mode as built).

    Raises:
        ValueError: naming ``source`` when the checkpoint is not a rails-train one or its head is not MoL.
    """
    if "rails_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{source}: not a rails-train checkpoint (needs rails_config and state_dict)")
    node = checkpoint["rails_config"].get("model", {}).get("similarity")
    if not isinstance(node, Mapping) or not str(node.get("_target_", "")).endswith("MoLSimilarity"):
        raise ValueError(f"{source}: model.similarity is not a MoLSimilarity node: {node!r}")
    # the benchmark's own rows decide what is compiled (as for the synthetic heads): the stored flag is dropped
    head = hydra.utils.instantiate({**dict(node), "compile_mixing": False})
    state = checkpoint["state_dict"]
    head.load_state_dict(
        {k[len("similarity.") :]: v for k, v in state.items() if k.startswith("similarity.")}
    )
    return head


@torch.no_grad()
def test_user_queries(
    checkpoint: Mapping[str, Any], data_root: str, num_queries: int, device: Any, source: str
) -> tuple[Tensor, Tensor]:
    """(Q, D) query embeddings and (Q,) user ids of the first ``num_queries`` test users of the run's data.

    The run's stored data config is rebuilt with ``root = data_root`` (its relative file paths resolve there) and
    its model with the checkpoint's weights (the encoder uncompiled: the same weights, no compilation).

    Raises:
        ValueError: naming ``source`` when the checkpoint lacks what this needs or the test split is too small.
    """
    stored = OmegaConf.create(dict(checkpoint["rails_config"]))
    if "data" not in stored or "root" not in stored.data:
        raise ValueError(f"{source}: the stored config has no data.root to point at {data_root!r}")
    num_items = checkpoint.get("hyper_parameters", {}).get("num_items")
    if num_items is None:
        raise ValueError(f"{source}: no hyper_parameters.num_items (not written by rails-train?)")
    stored.data.root = data_root
    if "compile_encoder" in stored.model:
        stored.model.compile_encoder = False
    datamodule = hydra.utils.instantiate(stored.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    model = hydra.utils.instantiate(stored.model, num_items=int(num_items))
    model.load_state_dict(checkpoint["state_dict"])
    model = model.to(device).eval()
    queries: list[Tensor] = []
    users: list[Tensor] = []
    for batch in datamodule.test_dataloader():
        batch = batch.to(device)
        queries.append(model.embed_queries(batch))
        users.append(batch.user_ids)
        if sum(len(q) for q in queries) >= num_queries:
            break
    found = sum(len(q) for q in queries)
    if found < num_queries:
        raise ValueError(
            f"{source}: the test split has {found} users, fewer than the {num_queries} queries needed"
        )
    return torch.cat(queries)[:num_queries].float(), torch.cat(users)[:num_queries]


def checkpoint_problem(
    checkpoint: Mapping[str, Any],
    num_items: int | None,
    noise: float,
    dtype: torch.dtype,
    device: Any,
    source: str = "checkpoint",
    num_queries: int = 256,
    name: str = "checkpoint",
    data_root: str | None = None,
) -> Problem:
    """MoL head + item table of a loaded rails-train checkpoint, queried by test users (``data_root``) or by
    random items plus ``noise`` (no data).

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

    if data_root is not None:
        queries, user_ids = test_user_queries(checkpoint, data_root, num_queries, device, source)
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
