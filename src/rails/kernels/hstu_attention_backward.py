"""Backward kernels of the fused HSTU attention (Triton): dQ, dK, dV and both bias-table gradients.

Three kernels, none with atomics:

- ``_hstu_bwd_dkdv``: one key tile per program, loops over query tiles -> dK, dV.
- ``_hstu_bwd_dq``: one query tile per program, loops over key tiles -> dQ.
- ``_hstu_bwd_bias``: one chunk of a diagonal *band* of tiles (query tile = key tile + band) and one sequence
  per program. It computes the bias once per tile for all heads, sums dS over heads, and accumulates

  * the head-summed dS tile over the band in registers: in a band every tile entry (r, c) has the same
    distance ``band * BLOCK + r - c``, so the position-table gradient is a per-diagonal sum of that one
    (BLOCK, BLOCK) accumulator, done in PyTorch on a (B, bands, chunks, BLOCK, BLOCK) partial;
  * a per-program time-bucket histogram, visiting only the buckets present in each tile
    (``while``-loop over the distinct buckets; usually a handful per tile).

  The partials are summed in PyTorch (no per-score-element float32 atomics into the 129-row time table and
  the position table, which serialised on a few hot addresses).
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
    dscores_tile,
    load_rows,
    load_times,
    score_tile,
    sequence_head,
    tile_bias,
)

# Tiles of one band handled by one bias-gradient program (bounds the longest program at long N).
BAND_CHUNK_TILES = 16


@triton.jit
def _hstu_bwd_dkdv(
    Q,
    K,
    V,
    DO,
    DK,
    DV_OUT,
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
    """dK, dV for one key tile; DK has K's strides, DV_OUT V's, DO the output strides."""
    b, h, length = sequence_head(LENGTHS, H)
    start_n = tl.program_id(0) * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dk = tl.zeros((BLOCK_N, BLOCK_DQK), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    if start_n < length:
        k = load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
        v = load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
        ts = load_times(TS + b * stride_tb, offs_n, length)
        for start_m in range((start_n // BLOCK_M) * BLOCK_M, length, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q = load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
            do = load_rows(DO + b * stride_ob + h * stride_oh, offs_m, stride_on, offs_dv, length, DV)
            tsn = load_times(TSN + b * stride_tb, offs_m, length)
            s, mask = score_tile(
                q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            dv += tl.dot(tl.trans(attention_tile(s, mask, inv_normalizer)).to(do.dtype), do)
            ds = dscores_tile(s, tl.dot(do, tl.trans(v)), mask, inv_normalizer)
            dk += tl.dot(tl.trans(ds).to(q.dtype), q)
    store_rows = offs_n[:, None] < N
    tl.store(
        DK + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_dqk[None, :],
        dk.to(DK.dtype.element_ty),
        mask=store_rows & (offs_dqk[None, :] < DQK),
    )
    tl.store(
        DV_OUT + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_dv[None, :],
        dv.to(DV_OUT.dtype.element_ty),
        mask=store_rows & (offs_dv[None, :] < DV),
    )


@triton.jit
def _hstu_bwd_dq(
    Q,
    K,
    V,
    DO,
    DQ,
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
    """dQ for one query tile (DQ has Q's strides)."""
    b, h, length = sequence_head(LENGTHS, H)
    start_m = tl.program_id(0) * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq = tl.zeros((BLOCK_M, BLOCK_DQK), dtype=tl.float32)
    if start_m < length:
        q = load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
        do = load_rows(DO + b * stride_ob + h * stride_oh, offs_m, stride_on, offs_dv, length, DV)
        tsn = load_times(TSN + b * stride_tb, offs_m, length)
        for start_n in range(0, tl.minimum(start_m + BLOCK_M, length), BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
            v = load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
            ts = load_times(TS + b * stride_tb, offs_n, length)
            s, mask = score_tile(
                q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            dq += tl.dot(dscores_tile(s, tl.dot(do, tl.trans(v)), mask, inv_normalizer).to(k.dtype), k)
    tl.store(
        DQ + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_dqk[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=(offs_m[:, None] < N) & (offs_dqk[None, :] < DQK),
    )


@triton.jit
def _hstu_bwd_bias(
    Q,
    K,
    V,
    DO,
    DPOS_PART,
    DTSW_PART,
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
    H,
    DQK,
    DV,
    NUM_TILES,
    NUM_CHUNKS,
    inv_normalizer: tl.constexpr,
    time_bucket_divisor: tl.constexpr,
    NUM_BUCKETS: tl.constexpr,
    BUCKETS_PAD: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Bias-table gradient partials of one (band, chunk, sequence); no atomics.

    Tiles (query tile t + band, key tile t) for t in [chunk * CHUNK, (chunk + 1) * CHUNK). Writes the
    head- and band-summed dS tile to DPOS_PART[b, band, chunk] (BLOCK, BLOCK) and the time-bucket
    histogram to DTSW_PART[b, band, chunk] (BUCKETS_PAD,).
    """
    band = tl.program_id(0)
    chunk = tl.program_id(1)
    b = tl.program_id(2)
    length = tl.load(LENGTHS + b).to(tl.int32)
    offs = tl.arange(0, BLOCK)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_t = tl.arange(0, BUCKETS_PAD)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    hist = tl.zeros((BUCKETS_PAD,), dtype=tl.float32)
    first = chunk * CHUNK
    last = tl.minimum(first + CHUNK, tl.cdiv(length, BLOCK) - band)  # query tile must start < length
    for t in range(first, last):
        offs_m = (t + band) * BLOCK + offs
        offs_n = t * BLOCK + offs
        tsn = load_times(TSN + b * stride_tb, offs_m, length)
        ts = load_times(TS + b * stride_tb, offs_n, length)
        bias, mask, bucket = tile_bias(
            offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
        )
        ds_sum = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for h in range(H):
            q = load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
            k = load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
            v = load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
            do = load_rows(DO + b * stride_ob + h * stride_oh, offs_m, stride_on, offs_dv, length, DV)
            s = tl.dot(q, tl.trans(k)) + bias
            ds_sum += dscores_tile(s, tl.dot(do, tl.trans(v)), mask, inv_normalizer)
        acc += ds_sum
        # Histogram over the buckets present in this tile only (ascending; sentinel NUM_BUCKETS + 1).
        tile_buckets = tl.where(mask, bucket, NUM_BUCKETS + 1)
        current = tl.min(tile_buckets)
        while current <= NUM_BUCKETS:
            weight = tl.sum(tl.where(tile_buckets == current, ds_sum, 0.0))
            hist += tl.where(offs_t == current, weight, 0.0)
            current = tl.min(tl.where(tile_buckets > current, tile_buckets, NUM_BUCKETS + 1))
    part = (b * NUM_TILES + band) * NUM_CHUNKS + chunk
    tl.store(DPOS_PART + part * BLOCK * BLOCK + offs[:, None] * BLOCK + offs[None, :], acc)
    tl.store(DTSW_PART + part * BUCKETS_PAD + offs_t, hist)


def _position_gradient(part: Tensor, block: int, rows: int) -> Tensor:
    """(B, bands, chunks, BLOCK, BLOCK) band-summed dS partials -> (rows,) float32 position-table gradient.

    Entry (r, c) of band k has distance ``k * BLOCK + r - c``; entries outside [0, rows) hold zeros (masked
    scores), so clamping their index is harmless.
    """
    per_band = part.sum(dim=(0, 2))  # (bands, BLOCK, BLOCK)
    bands = per_band.shape[0]
    idx = torch.arange(block, device=part.device)
    distance = torch.arange(bands, device=part.device)[:, None, None] * block + idx[:, None] - idx[None, :]
    grad = torch.zeros(rows, dtype=torch.float32, device=part.device)
    return grad.index_add_(0, distance.clamp(0, rows - 1).reshape(-1), per_band.reshape(-1))


def hstu_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    tables: tuple[Tensor, Tensor],
    seq: HSTUSequences,
    launch: HSTULaunch,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Launch the backward kernels: gradients (dq, dk, dv, d position table, d time table).

    ``grad_out`` (B, N, H, d_v); the other inputs as saved by the forward pass (see :func:`hstu_forward`).
    """
    b, n, h, dqk = q.shape
    dv_dim = v.shape[-1]
    grad_out = grad_out.contiguous().to(v.dtype)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    # Gradients are allocated contiguous; contiguous copies of q/k/v make one stride set serve both.
    qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
    shared, keywords = kernel_arguments(qc, kc, vc, grad_out, tables, seq, launch)
    common = head_tile_keywords(qc, vc, launch)
    _hstu_bwd_dkdv[(triton.cdiv(n, launch.block_n), b * h)](
        qc, kc, vc, grad_out, dk, dv, *shared, **common, **keywords
    )
    _hstu_bwd_dq[(triton.cdiv(n, launch.block_m), b * h)](
        qc, kc, vc, grad_out, dq, *shared, **common, **keywords
    )

    position_weights, time_weights = tables
    num_buckets = keywords["NUM_BUCKETS"]
    block = min(launch.block_m, launch.block_n)  # square tiles: a band has one distance per (r, c)
    tiles = triton.cdiv(n, block)
    chunks = triton.cdiv(tiles, BAND_CHUNK_TILES)
    buckets_pad = triton.next_power_of_2(num_buckets + 1)
    dpos_part = torch.empty((b, tiles, chunks, block, block), dtype=torch.float32, device=q.device)
    dtsw_part = torch.empty((b, tiles, chunks, buckets_pad), dtype=torch.float32, device=q.device)
    _hstu_bwd_bias[(tiles, chunks, b)](
        qc,
        kc,
        vc,
        grad_out,
        dpos_part,
        dtsw_part,
        *shared,
        h,
        dqk,
        dv_dim,
        tiles,
        chunks,
        BUCKETS_PAD=buckets_pad,
        CHUNK=BAND_CHUNK_TILES,
        BLOCK=block,
        **keywords,
    )
    dpos = _position_gradient(dpos_part, block, position_weights.shape[0])
    dtsw = dtsw_part.sum(dim=(0, 1, 2))[: num_buckets + 1]
    return dq, dk, dv, dpos.to(position_weights.dtype), dtsw.to(time_weights.dtype)
