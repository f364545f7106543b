"""Scan of probed inverted lists in one Triton kernel: scores of every member of every probed list.

:meth:`rails.retrieval.indexes.inverted_lists.InvertedLists.scan` in PyTorch gathers the probed lists' keys
into a ``(B, n * S, D)`` copy before a batched matrix-vector product; at 10M items, B = 32 and 32 probes of
2,000-slot lists that copy is 1 GB of writes and reads, half of it padding, and it was 2.5 of the 5.2 ms of a
``ClusteredTopK`` search on an H200 (``scripts/profile_index.py``, results/profiles/). The kernel
(:mod:`rails.kernels.list_scan_kernel`) reads each probed member's key row where it lies in the corpus's
key matrix, stops at the list's fill and writes only the ``(B, n * S)`` fp32 scores; the lists hold member
positions only, so an index over 100M items needs no second copy of its keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rails.kernels.list_scan_kernel import list_scan_kernel

BLOCK_S = 64  # list slots per program


def list_scan_scores(queries: Tensor, lists: Tensor, members: Tensor, keys: Tensor, fill: Tensor) -> Tensor:
    """Scores of every slot of each query's probed lists.

    Args:
        queries: (B, D) query keys (any float dtype; products accumulated in fp32).
        lists: (B, n) probed list indices (valid list ids).
        members: (L, S) corpus positions of each list's members (slots ``>= fill`` are padding, not read).
        keys: (X, D) corpus key rows (unit stride along D).
        fill: (L,) members per list.

    Returns:
        (B, n * S) float32: ``<queries[b], keys[members[lists[b, p], s]]>`` at column ``p * S + s`` for
        ``s < fill``, ``-inf`` at padding slots.
    """
    if queries.dim() != 2 or keys.dim() != 2 or lists.dim() != 2 or members.dim() != 2:
        raise ValueError(
            f"list scan needs (B, D) queries, (B, n) lists, (L, S) members and (X, D) keys, got "
            f"{tuple(queries.shape)}, {tuple(lists.shape)}, {tuple(members.shape)} and {tuple(keys.shape)}"
        )
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, keys {keys.shape[1]}")
    if lists.shape[0] != queries.shape[0]:
        raise ValueError(f"{lists.shape[0]} rows of lists for {queries.shape[0]} queries")
    batch, num_probes = lists.shape
    list_size, dim = members.shape[1], keys.shape[1]
    queries = queries.contiguous()
    lists = lists.to(torch.int64).contiguous()
    members = members.contiguous()
    keys = keys if keys.stride(1) == 1 else keys.contiguous()
    fill = fill.to(torch.int64).contiguous()
    out = torch.empty(batch, num_probes * list_size, dtype=torch.float32, device=queries.device)
    if out.numel() == 0:
        return out
    block_d = max(16, min(128, 1 << (dim - 1).bit_length()))
    grid = (batch, num_probes, -(-list_size // BLOCK_S))
    list_scan_kernel[grid](
        queries, lists, members, keys, fill, out, num_probes, list_size, dim, queries.stride(0),
        lists.stride(0), keys.stride(0), BLOCK_S=BLOCK_S, BLOCK_D=block_d,
    )  # fmt: skip
    return out
