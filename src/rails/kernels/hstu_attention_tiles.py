"""Tile helpers shared by the HSTU attention kernels (Triton inlines them into each kernel).

One (query tile, key tile) pair of sequence b and head h: rows ``offs_m`` (BLOCK_M,) of Q and keys
``offs_n`` (BLOCK_N,) of K, V, with (B, N) timestamps. :func:`score_tile` recomputes
``S = Q K^T + w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]`` with the causal / length mask,
:func:`attention_tile` the weights ``SiLU(S) / n`` and :func:`dscores_tile` their gradient. The forward
kernel is in :mod:`rails.kernels.hstu_attention_forward`, the backward kernels in
:mod:`rails.kernels.hstu_attention_backward`.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_rows(ptr, offs_rows, stride_row, offs_d, length, dim):
    """(rows, BLOCK_D) tile of a (N, dim) head slice; zero beyond ``length`` rows and ``dim`` columns."""
    return tl.load(
        ptr + offs_rows[:, None] * stride_row + offs_d[None, :],
        mask=(offs_rows[:, None] < length) & (offs_d[None, :] < dim),
        other=0.0,
    )


@triton.jit
def load_times(ptr, offs, length):
    """(BLOCK,) int64 timestamps of one sequence at ``offs``; 0 beyond ``length``."""
    return tl.load(ptr + offs, mask=offs < length, other=0)


@triton.jit
def sequence_head(LENGTHS, H):
    """(b, h, length) of this program's (sequence, head) pair, from program id 1 = b * H + h."""
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    return b, pid_bh % H, tl.load(LENGTHS + b).to(tl.int32)


@triton.jit
def tile_bias(offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS: tl.constexpr):
    """Relative bias (BLOCK_M, BLOCK_N) float32, causal/valid mask and int32 time buckets of one tile."""
    mask = (offs_m[:, None] >= offs_n[None, :]) & (offs_n[None, :] < length) & (offs_m[:, None] < length)
    distance = tl.maximum(offs_m[:, None] - offs_n[None, :], 0)
    gap = tl.maximum(tl.abs(tsn[:, None] - ts[None, :]), 1).to(tl.float32)
    bucket = (tl.log(gap) / time_bucket_divisor).to(tl.int32)
    bucket = tl.minimum(tl.maximum(bucket, 0), NUM_BUCKETS)
    bias = tl.load(POS + distance, mask=mask, other=0.0).to(tl.float32)
    bias += tl.load(TSW + bucket, mask=mask, other=0.0).to(tl.float32)
    return bias, mask, bucket


@triton.jit
def score_tile(
    q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS: tl.constexpr
):
    """Scores ``S = q k^T + bias`` (BLOCK_M, BLOCK_N) float32 and the causal/valid mask of one tile."""
    bias, mask, _ = tile_bias(offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS)
    return tl.dot(q, tl.trans(k)) + bias, mask


@triton.jit
def attention_tile(s, mask, inv_normalizer):
    """A = SiLU(S) / n, zero outside the mask."""
    return tl.where(mask, s * tl.sigmoid(s) * inv_normalizer, 0.0)


@triton.jit
def dscores_tile(s, da, mask, inv_normalizer):
    """dS = dA * d/dS (SiLU(S) / n), zero outside the mask."""
    sig = tl.sigmoid(s)
    return tl.where(mask, da * inv_normalizer * sig * (1.0 + s * (1.0 - sig)), 0.0)


def block_dim(d: int) -> int:
    """Head dim padded to a power of two >= 16 inside the kernels (25 -> 32)."""
    return max(16, triton.next_power_of_2(d))
