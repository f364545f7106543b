"""Forward kernel of the fused HSTU attention (Triton) and its launcher.

``_hstu_fwd`` computes O for one (query tile, sequence, head): it recomputes
``S = Q K^T + w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]`` tile by tile from the two bias tables and the
(B, N) timestamps, applies ``SiLU(S) / n`` under the causal / length mask (both with the helpers of
:mod:`rails.kernels.hstu_attention_tiles`) and accumulates ``A V``, visiting only key tiles on or below the
diagonal and before the row's length. The autograd wrapper is :mod:`rails.kernels.hstu_attention_triton`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from rails.kernels.hstu_attention_launch import (
    HSTULaunch,
    HSTUSequences,
    head_tile_keywords,
    kernel_arguments,
)
from rails.kernels.hstu_attention_tiles import (
    attention_tile,
    load_rows,
    load_times,
    score_tile,
    sequence_head,
)


@triton.jit
def _hstu_fwd(
    Q,
    K,
    V,
    OUT,
    POS,
    TSW,
    TS,
    TSN,
    LENGTHS,
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_ob,
    stride_on,
    stride_oh,
    stride_tb,
    N,
    H,
    DQK,
    DV,
    inv_normalizer: tl.constexpr,
    time_bucket_divisor: tl.constexpr,
    NUM_BUCKETS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """O for one (query tile, sequence, head); rows past the length are written as zeros."""
    b, h, length = sequence_head(LENGTHS, H)
    start_m = tl.program_id(0) * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    if start_m < length:
        q = load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
        tsn = load_times(TSN + b * stride_tb, offs_m, length)
        for start_n in range(0, tl.minimum(start_m + BLOCK_M, length), BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
            v = load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
            ts = load_times(TS + b * stride_tb, offs_n, length)
            s, mask = score_tile(
                q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            acc += tl.dot(attention_tile(s, mask, inv_normalizer).to(v.dtype), v)
    tl.store(
        OUT + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_dv[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=(offs_m[:, None] < N) & (offs_dv[None, :] < DV),
    )


def hstu_forward(
    q: Tensor, k: Tensor, v: Tensor, tables: tuple[Tensor, Tensor], seq: HSTUSequences, launch: HSTULaunch
) -> Tensor:
    """Launch the forward kernel: (B, N, H, d_qk) q, k and (B, N, H, d_v) v -> (B, N, H, d_v).

    Inputs as prepared by the autograd wrapper: last dims contiguous, contiguous (P,) position and (T + 1,)
    time bias ``tables``, ``seq`` prepared (:meth:`HSTUSequences.prepared`).
    """
    b, n, h, _ = q.shape
    out = torch.empty((b, n, h, v.shape[-1]), dtype=v.dtype, device=v.device)
    shared, keywords = kernel_arguments(q, k, v, out, tables, seq, launch)
    _hstu_fwd[(triton.cdiv(n, launch.block_m), b * h)](
        q, k, v, out, *shared, **head_tile_keywords(q, v, launch), **keywords
    )
    return out
