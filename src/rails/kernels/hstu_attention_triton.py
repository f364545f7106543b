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
from rails.kernels.hstu_attention_launch import HSTULaunch, HSTUSequences


def _last_dim_contiguous(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


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
        seq: HSTUSequences,
        launch: HSTULaunch,
    ) -> Tensor:
        q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
        tables = (position_weights.contiguous(), time_weights.contiguous())
        seq = seq.prepared()
        ctx.save_for_backward(q, k, v, *tables, *seq.tensors)
        ctx.constants = (seq.normalizer, seq.time_bucket_divisor)
        ctx.launch = launch
        return hstu_forward(q, k, v, tables, seq, launch)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, position_weights, time_weights, *tensors = ctx.saved_tensors
        seq = HSTUSequences(*tensors, *ctx.constants)
        grads = hstu_backward(grad_out, q, k, v, (position_weights, time_weights), seq, ctx.launch)
        return (*grads, None, None)


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

    ``block_m`` / ``block_n``: query / key tile sizes (powers of two, >= 16; ``None``: 32 up to N = 128,
    else 64); the bias-gradient kernel uses square tiles of ``min(block_m, block_n)``. ``num_warps`` /
    ``num_stages`` are the Triton launch options of every kernel; ``num_warps=None`` = 8 for 64-row tiles,
    else 4 (see :meth:`HSTULaunch.choose`).
    """
    n = q.shape[1]
    if position_weights.shape[0] < n:
        raise ValueError(f"sequence length {n} exceeds the position bias table ({position_weights.shape[0]})")
    if q.shape[:3] != k.shape[:3] or q.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    launch = HSTULaunch.choose(n, block_m, block_n, num_warps, num_stages)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)
    seq = HSTUSequences(timestamps, next_timestamps, lengths, normalizer, time_bucket_divisor)
    return HSTUAttentionFunction.apply(q, k, v, position_weights, time_weights, seq, launch)
