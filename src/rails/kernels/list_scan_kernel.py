"""The ``@triton.jit`` part of the inverted-list scan (launcher: :mod:`rails.kernels.list_scan_triton`).

One program scores ``BLOCK_S`` consecutive slots of one probed list for one query: it reads the slots' member
positions, then each member's key row where it lies in the corpus's ``(X, D)`` key matrix (no gathered copy,
no per-list copy of the keys), only up to the list's fill (padding slots are neither read nor scored: they
get ``-inf``), and accumulates ``<query, key>`` in fp32 over ``BLOCK_D``-wide slices of the key dimension.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def list_scan_kernel(
    Q, LISTS, MEMBERS, KEYS, FILL, OUT, num_probes, list_size, dim, stride_q, stride_lists, stride_keys,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """OUT[b, p * S + s] = <Q[b], KEYS[MEMBERS[l, s]]> with l = LISTS[b, p], for s < FILL[l]; else -inf."""
    query = tl.program_id(0).to(tl.int64)
    probe = tl.program_id(1).to(tl.int64)
    slots = tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S)
    lst = tl.load(LISTS + query * stride_lists + probe).to(tl.int64)
    fill = tl.load(FILL + lst)
    valid = slots < fill
    members = tl.load(MEMBERS + lst * list_size + slots, mask=valid, other=0).to(tl.int64)
    rows = KEYS + members[:, None] * stride_keys
    acc = tl.zeros((BLOCK_S,), dtype=tl.float32)
    for start in range(0, dim, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        in_dim = cols < dim
        q = tl.load(Q + query * stride_q + cols, mask=in_dim, other=0.0).to(tl.float32)
        k = tl.load(rows + cols[None, :], mask=valid[:, None] & in_dim[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(k * q[None, :], axis=1)
    scores = tl.where(valid, acc, float("-inf"))
    tl.store(OUT + query * num_probes * list_size + probe * list_size + slots, scores, mask=slots < list_size)
