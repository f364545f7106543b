"""Fused HSTU attention in Triton: forward and backward without materialising (B, H, N, N) scores.

Computes exactly :func:`rails.models.encoders.hstu_attention.hstu_attention_reference` (see its module for
the formula). The kernels recompute ``S = Q K^T + w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]`` tile by
tile from the two bias tables and the (B, N) timestamps, and visit only tiles on or below the diagonal and
before the row's length, so ragged batches cost what their valid tokens cost. The forward kernel is in
:mod:`rails.kernels.hstu_attention_forward`, the backward kernels (no atomics) in
:mod:`rails.kernels.hstu_attention_backward`; this module holds the autograd function and the entry point.

Head dims are padded to a power of two >= 16 inside the kernels (25 -> 32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rails.kernels.hstu_attention_backward import hstu_backward
from rails.kernels.hstu_attention_forward import hstu_forward


def _last_dim_contiguous(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def default_blocks(n: int) -> tuple[int, int]:
    """(block_m, block_n) for sequence length ``n``: 32 up to N = 128 (less padding), else 64."""
    return (32, 32) if n <= 128 else (64, 64)


class HSTUAttentionFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels (gradients for q, k, v and both bias tables)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        position_weights: Tensor,
        time_weights: Tensor,
        timestamps: Tensor,
        next_timestamps: Tensor,
        lengths: Tensor,
        normalizer: float,
        time_bucket_divisor: float,
        block_m: int,
        block_n: int,
        num_warps: int,
        num_stages: int,
    ) -> Tensor:
        q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
        timestamps = timestamps.to(torch.int64).contiguous()
        next_timestamps = next_timestamps.to(torch.int64).contiguous()
        lengths = lengths.to(torch.int64).contiguous()
        position_weights = position_weights.contiguous()
        time_weights = time_weights.contiguous()
        out = hstu_forward(
            q,
            k,
            v,
            position_weights,
            time_weights,
            timestamps,
            next_timestamps,
            lengths,
            normalizer,
            time_bucket_divisor,
            block_m,
            block_n,
            num_warps,
            num_stages,
        )
        ctx.save_for_backward(q, k, v, position_weights, time_weights, timestamps, next_timestamps, lengths)
        ctx.normalizer = normalizer
        ctx.time_bucket_divisor = time_bucket_divisor
        ctx.launch = (block_m, block_n, num_warps, num_stages)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, position_weights, time_weights, timestamps, next_timestamps, lengths = ctx.saved_tensors
        block_m, block_n, num_warps, num_stages = ctx.launch
        grads = hstu_backward(
            grad_out,
            q,
            k,
            v,
            position_weights,
            time_weights,
            timestamps,
            next_timestamps,
            lengths,
            ctx.normalizer,
            ctx.time_bucket_divisor,
            block_m,
            block_n,
            num_warps,
            num_stages,
        )
        return (*grads, *([None] * 9))


def hstu_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    position_weights: Tensor,
    time_weights: Tensor,
    timestamps: Tensor,
    next_timestamps: Tensor,
    lengths: Tensor,
    normalizer: float,
    time_bucket_divisor: float = 0.301,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int = 2,
) -> Tensor:
    """Fused HSTU attention; arguments and result as ``hstu_attention_reference`` ((B, N, H, d_v) output).

    ``block_m`` / ``block_n``: query / key tile sizes (powers of two, >= 16; ``None`` = :func:`default_blocks`);
    the bias-gradient kernel uses square tiles of ``min(block_m, block_n)``. ``num_warps`` / ``num_stages``
    are the Triton launch options of every kernel; ``num_warps=None`` = 8 for 64-row tiles (4 warps need
    255 registers and spill at d = 32 on sm_90), else 4.
    """
    n = q.shape[1]
    if position_weights.shape[0] < n:
        raise ValueError(f"sequence length {n} exceeds the position bias table ({position_weights.shape[0]})")
    if q.shape[:3] != k.shape[:3] or q.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    default_m, default_n = default_blocks(n)
    block_m, block_n = block_m or default_m, block_n or default_n
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {size}")
    if num_warps is None:
        num_warps = 8 if max(block_m, block_n) >= 64 else 4
    if k.dtype != q.dtype or v.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)
    return HSTUAttentionFunction.apply(
        q,
        k,
        v,
        position_weights,
        time_weights,
        timestamps,
        next_timestamps,
        lengths,
        float(normalizer),
        float(time_bucket_divisor),
        block_m,
        block_n,
        num_warps,
        num_stages,
    )
