"""Fused HSTU attention in Triton: forward and backward without materialising (B, H, N, N) scores.

Computes exactly :func:`rails.models.encoders.hstu_attention.hstu_attention_reference` (see its module for
the formula). Every kernel recomputes ``S = Q K^T + w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]`` tile by
tile from the two bias tables and the (B, N) timestamps, and visits only tiles on or below the diagonal and
before the row's length, so ragged batches cost what their valid tokens cost.

Backward runs three kernels, none with atomics:

- ``_hstu_bwd_dkdv``: one key tile per program, loops over query tiles -> dK, dV.
- ``_hstu_bwd_dq``: one query tile per program, loops over key tiles -> dQ.
- ``_hstu_bwd_bias``: one chunk of a diagonal *band* of tiles (query tile = key tile + band) and one sequence
  per program. It computes the bias once per tile for all heads, sums dS over heads, and accumulates

  * the head-summed dS tile over the band in registers: in a band every tile entry (r, c) has the same
    distance ``band * BLOCK + r - c``, so the position-table gradient is a per-diagonal sum of that one
    (BLOCK, BLOCK) accumulator, done in PyTorch on a (B, bands, chunks, BLOCK, BLOCK) partial;
  * a per-program time-bucket histogram, visiting only the buckets present in each tile
    (``while``-loop over the distinct buckets; usually a handful per tile).

  The partials are summed in PyTorch. This replaces the previous per-score-element float32 atomics into the
  129-row time table and the position table, which serialised on a few hot addresses.

Head dims are padded to a power of two >= 16 inside the kernels (25 -> 32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

# Tiles of one band handled by one bias-gradient program (bounds the longest program at long N).
BAND_CHUNK_TILES = 16


@triton.jit
def _load_rows(ptr, offs_rows, stride_row, offs_d, length, dim):
    """(rows, BLOCK_D) tile of a (N, dim) head slice; zero beyond ``length`` rows and ``dim`` columns."""
    return tl.load(
        ptr + offs_rows[:, None] * stride_row + offs_d[None, :],
        mask=(offs_rows[:, None] < length) & (offs_d[None, :] < dim),
        other=0.0,
    )


@triton.jit
def _bias(offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS: tl.constexpr):
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
def _dscores(s, da, mask, inv_normalizer):
    """dS = dA * d/dS (SiLU(S) / n), zero outside the mask."""
    sig = tl.sigmoid(s)
    return tl.where(mask, da * inv_normalizer * sig * (1.0 + s * (1.0 - sig)), 0.0)


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
    inv_normalizer,
    time_bucket_divisor,
    NUM_BUCKETS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """O for one (query tile, sequence, head); rows past the length are written as zeros."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    length = tl.load(LENGTHS + b).to(tl.int32)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    if start_m < length:
        q = _load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
        tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
        end_n = tl.minimum(start_m + BLOCK_M, length)
        for start_n in range(0, end_n, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = _load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
            v = _load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
            ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
            bias, mask, bucket = _bias(
                offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            s = tl.dot(q, tl.trans(k)) + bias
            a = tl.where(mask, s * tl.sigmoid(s) * inv_normalizer, 0.0)
            acc += tl.dot(a.to(v.dtype), v)
    tl.store(
        OUT + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_dv[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=(offs_m[:, None] < N) & (offs_dv[None, :] < DV),
    )


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
    inv_normalizer,
    time_bucket_divisor,
    NUM_BUCKETS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """dK, dV for one key tile; DK has K's strides, DV_OUT V's, DO the output strides."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    length = tl.load(LENGTHS + b).to(tl.int32)
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dk = tl.zeros((BLOCK_N, BLOCK_DQK), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    if start_n < length:
        k = _load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
        v = _load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
        ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
        first_m = (start_n // BLOCK_M) * BLOCK_M
        for start_m in range(first_m, length, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q = _load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
            do = _load_rows(DO + b * stride_ob + h * stride_oh, offs_m, stride_on, offs_dv, length, DV)
            tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
            bias, mask, bucket = _bias(
                offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            s = tl.dot(q, tl.trans(k)) + bias
            a = tl.where(mask, s * tl.sigmoid(s) * inv_normalizer, 0.0)
            dv += tl.dot(tl.trans(a).to(do.dtype), do)
            ds = _dscores(s, tl.dot(do, tl.trans(v)), mask, inv_normalizer)
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
    inv_normalizer,
    time_bucket_divisor,
    NUM_BUCKETS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """dQ for one query tile (DQ has Q's strides)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    length = tl.load(LENGTHS + b).to(tl.int32)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq = tl.zeros((BLOCK_M, BLOCK_DQK), dtype=tl.float32)
    if start_m < length:
        q = _load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
        do = _load_rows(DO + b * stride_ob + h * stride_oh, offs_m, stride_on, offs_dv, length, DV)
        tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
        end_n = tl.minimum(start_m + BLOCK_M, length)
        for start_n in range(0, end_n, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = _load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
            v = _load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
            ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
            bias, mask, bucket = _bias(
                offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            s = tl.dot(q, tl.trans(k)) + bias
            ds = _dscores(s, tl.dot(do, tl.trans(v)), mask, inv_normalizer)
            dq += tl.dot(ds.to(k.dtype), k)
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
    inv_normalizer,
    time_bucket_divisor,
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
        tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
        ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
        bias, mask, bucket = _bias(
            offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
        )
        ds_sum = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for h in range(H):
            q = _load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qn, offs_dqk, length, DQK)
            k = _load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kn, offs_dqk, length, DQK)
            v = _load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vn, offs_dv, length, DV)
            do = _load_rows(DO + b * stride_ob + h * stride_oh, offs_m, stride_on, offs_dv, length, DV)
            s = tl.dot(q, tl.trans(k)) + bias
            ds_sum += _dscores(s, tl.dot(do, tl.trans(v)), mask, inv_normalizer)
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


def _block_dim(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _last_dim_contiguous(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def default_blocks(n: int) -> tuple[int, int]:
    """(block_m, block_n) for sequence length ``n``: 32 up to N = 128 (less padding), else 64."""
    return (32, 32) if n <= 128 else (64, 64)


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
        b, n, h, dqk = q.shape
        dv = v.shape[-1]
        out = torch.empty((b, n, h, dv), dtype=v.dtype, device=v.device)
        _hstu_fwd[(triton.cdiv(n, block_m), b * h)](
            q,
            k,
            v,
            out,
            position_weights,
            time_weights,
            timestamps,
            next_timestamps,
            lengths,
            *q.stride()[:3],
            *k.stride()[:3],
            *v.stride()[:3],
            *out.stride()[:3],
            timestamps.stride(0),
            n,
            h,
            dqk,
            dv,
            1.0 / normalizer,
            time_bucket_divisor,
            NUM_BUCKETS=time_weights.shape[0] - 1,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_DQK=_block_dim(dqk),
            BLOCK_DV=_block_dim(dv),
            num_warps=num_warps,
            num_stages=num_stages,
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
        b, n, h, dqk = q.shape
        dv_dim = v.shape[-1]
        grad_out = grad_out.contiguous().to(v.dtype)
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        # Gradients are allocated contiguous; contiguous copies of q/k/v make one stride set serve both.
        qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
        num_buckets = time_weights.shape[0] - 1
        dims = {
            "inv_normalizer": 1.0 / ctx.normalizer,
            "time_bucket_divisor": ctx.time_bucket_divisor,
            "NUM_BUCKETS": num_buckets,
            "BLOCK_DQK": _block_dim(dqk),
            "BLOCK_DV": _block_dim(dv_dim),
            "num_warps": num_warps,
            "num_stages": num_stages,
        }
        common = {"N": n, "H": h, "DQK": dqk, "DV": dv_dim, "BLOCK_M": block_m, "BLOCK_N": block_n, **dims}
        strides = (
            *qc.stride()[:3],
            *kc.stride()[:3],
            *vc.stride()[:3],
            *grad_out.stride()[:3],
            timestamps.stride(0),
        )
        tables = (position_weights, time_weights, timestamps, next_timestamps, lengths)
        _hstu_bwd_dkdv[(triton.cdiv(n, block_n), b * h)](
            qc, kc, vc, grad_out, dk, dv, *tables, *strides, **common
        )
        _hstu_bwd_dq[(triton.cdiv(n, block_m), b * h)](qc, kc, vc, grad_out, dq, *tables, *strides, **common)

        block = min(block_m, block_n)  # square tiles: a band has one distance per (r, c)
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
            *tables,
            *strides,
            h,
            dqk,
            dv_dim,
            tiles,
            chunks,
            BUCKETS_PAD=buckets_pad,
            CHUNK=BAND_CHUNK_TILES,
            BLOCK=block,
            **dims,
        )
        dpos = _position_gradient(dpos_part, block, position_weights.shape[0])
        dtsw = dtsw_part.sum(dim=(0, 1, 2))[: num_buckets + 1]
        return (
            dq,
            dk,
            dv,
            dpos.to(position_weights.dtype),
            dtsw.to(time_weights.dtype),
            *([None] * 9),
        )


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
