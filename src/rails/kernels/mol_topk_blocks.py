"""Block shapes of the fused exact MoL top-k kernel: valid tiles, per-regime defaults, autotuner candidates.

Pure Python on numbers (no Triton): :mod:`rails.kernels.mol_topk_triton` picks (BQ, BX, warps, stages) and
corpus splits with these, and the autotuner prunes its candidates with :func:`prune_configs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

MAX_PAIRS = 256  # (query, item) pairs per tile
QUERY_ALIGN = 64  # query rows are padded to a multiple of the largest BQ
SPLIT_ALIGN = 128  # items per split are a multiple of the largest BX
# (BQ, BX, num_warps, num_stages, maxnreg) tried by the autotuner; invalid or wasteful ones are pruned per call.
# maxnreg None: ptxas' choice (241-255 registers at 8x4x64). A cap of 128 (two 8-warp programs per SM instead of one,
# with spills) was tried and lost at every shape: H200, 1M items, B = 32, 8x4x64, untuned, 8.13 / 22.23 / 10.15 ms
# against 7.18 / 9.85 / 8.74 at 4x32x8 / 8x8x4 / 2x64x8 (results/profiles/2026-12-02-h200-round23-maxnreg-1M.md), so
# the autotuner no longer tries it; fused_mol_topk(maxnreg=) still launches a capped shape.
TUNE_CONFIGS: tuple[tuple[int, int, int, int, int | None], ...] = (
    (1, 128, 8, 2, None),
    (2, 64, 8, 2, None),
    (2, 128, 8, 2, None),
    (4, 32, 8, 2, None),
    (8, 16, 8, 2, None),
    (8, 16, 4, 3, None),
    (8, 8, 4, 2, None),  # round 17's block grid: the fastest shape at 1M and 10M items, B = 32, 8x4x64
    (16, 8, 8, 2, None),
    (16, 16, 8, 2, None),
)


# the kernel's arguments the autotuner keys its choice on (one tuned config per distinct tuple)
TUNE_KEY = ("batch_bucket", "PQ", "PX", "D", "K_PAD", "H_PAD", "H_CHUNK", "HAS_EXCL", "PRUNE", "FAST_MATH")
TUNE_KEY += ("PRECISION", "UPCAST", "ABLATE", "EMIT", "MERGE_TILES", "STEP_TILES")


def tune_configs(config: Callable[..., Any]) -> list[Any]:
    """:data:`TUNE_CONFIGS` as ``config`` objects (``triton.Config``; this module does not import Triton)."""
    return [
        config({"BQ": bq, "BX": bx}, num_warps=w, num_stages=s, maxnreg=r) for bq, bx, w, s, r in TUNE_CONFIGS
    ]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int, floor: int = 16) -> int:
    return max(floor, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def parse_launch(text: str) -> tuple[int, int, int | None, int | None]:
    """``BQxBX[xWARPS][:HIDDEN_CHUNK]`` (positive integers) -> (BQ, BX, warps or None, hidden chunk or None).

    Raises:
        ValueError: naming ``text`` and the expected form.
    """
    shape, colon, chunk = text.partition(":")
    parts = shape.lower().split("x")
    numbers = [*parts, chunk] if colon else parts
    if len(parts) not in (2, 3) or not all(n.isdigit() and int(n) > 0 for n in numbers):
        raise ValueError(f"{text!r} is not BQxBX[xWARPS][:HIDDEN_CHUNK] (positive integers)")
    bq, bx, *warps = (int(p) for p in parts)
    return bq, bx, warps[0] if warps else None, int(chunk) if colon else None


def block_valid(bq: int, bx: int, pqp: int, pxp: int, k_pad: int) -> bool:
    """Whether (BQ, BX) gives tensor-core tiles >= 16 in every matmul dimension, at most 256 (query, item)
    pairs per tile (the (pairs, H) fp32 hidden layer lives in registers) and fits the top-k merge."""
    return bq * pqp >= 16 and bx * pxp >= 16 and 16 <= bq * bx <= MAX_PAIRS and bx <= max(k_pad, 128)


def default_blocks(batch: int, pqp: int, pxp: int, block_x: int | None = None) -> tuple[int, int, int, int]:
    """Heuristic (BQ, BX, num_warps, num_stages) per batch regime; ``block_x`` fixes BX."""
    min_bq = max(1, 16 // pqp)
    bq = min_bq if batch <= 8 else max(min_bq, 8 if batch <= 64 else 16)
    if block_x:  # a given tile width: as many queries as keep the tile at <= 128 pairs
        bq = max(min_bq, min(bq, 128 // block_x))
    bx = block_x or max(128 // bq, cdiv(16, pxp), 1)
    bq = max(bq, cdiv(16, bx))  # M of the gating matmuls >= 16
    return bq, bx, 8 if bq * bx >= 128 else 4, 2


def splits_for(batch: int, num_items: int, sms: int) -> int:
    """Corpus splits on a GPU of ``sms`` SMs: ~4 programs per SM at a nominal 8 queries per block, >= 1024 items
    per split."""
    return max(1, min(cdiv(num_items, 1024), cdiv(4 * sms, cdiv(batch, 8))))


def default_splits(batch: int, num_items: int, device: torch.device) -> int:
    """:func:`splits_for` this CUDA device's SMs; 1 off CUDA."""
    if device.type != "cuda":
        return 1
    return splits_for(batch, num_items, torch.cuda.get_device_properties(device).multi_processor_count)


def items_per_split(num_items: int, splits: int) -> int:
    """Items of each of ``splits`` corpus splits, a multiple of :data:`SPLIT_ALIGN` (the last one may be shorter)."""
    return cdiv(cdiv(num_items, splits), SPLIT_ALIGN) * SPLIT_ALIGN


def prune_configs(configs: list, named_args: dict, **kwargs: object) -> list:
    """The autotuner's early prune: valid tiles only, and no more queries per program than B needs.

    Triton passes the positional arguments as ``named_args`` and the constexpr keywords as ``kwargs``.
    """
    args = {**named_args, **kwargs}
    pqp, pxp, k_pad, batch = args["PQP"], args["PXP"], args["K_PAD"], args["batch_bucket"]
    min_bq = max(1, 16 // pqp)
    kept = [
        c
        for c in configs
        if block_valid(c.kwargs["BQ"], c.kwargs["BX"], pqp, pxp, k_pad)
        and c.kwargs["BQ"] <= max(min_bq, batch)
    ]
    if not kept:  # every shape has a valid heuristic block: tune that one alone
        bq, bx, warps, stages = default_blocks(batch, pqp, pxp)
        kept = [type(configs[0])({"BQ": bq, "BX": bx}, num_warps=warps, num_stages=stages)]
    return kept
