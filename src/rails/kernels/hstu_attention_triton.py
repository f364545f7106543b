"""Fused HSTU attention in Triton: forward and backward without materialising (B, H, N, N) scores.

Computes exactly :func:`rails.models.encoders.hstu_attention.hstu_attention_reference` (see its module for
the formula). Each program owns one (query tile, sequence, head) or (key tile, sequence, head); it loops over
the causal tiles of the other side, recomputes ``S = Q K^T + w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]``
on the fly from the two bias tables and the (B, N) timestamps, and skips every tile beyond the row's length,
so ragged batches cost what their valid tokens cost.

Backward runs two kernels: dK/dV (loop over query tiles) and dQ (loop over key tiles). The dQ kernel also
scatters dS into the two bias-table gradients with float32 atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _scores(
    q,
    k,
    offs_m,
    offs_n,
    tsn,
    ts,
    length,
    POS,
    TSW,
    time_bucket_divisor,
    NUM_BUCKETS: tl.constexpr,
):
    """S (BLOCK_M, BLOCK_N) float32, the causal/valid mask, the distances and the time buckets."""
    s = tl.dot(q, tl.trans(k))
    mask = (offs_m[:, None] >= offs_n[None, :]) & (offs_n[None, :] < length) & (offs_m[:, None] < length)
    distance = tl.maximum(offs_m[:, None] - offs_n[None, :], 0)
    gap = tl.abs(tsn[:, None] - ts[None, :])
    gap = tl.maximum(gap, 1).to(tl.float32)
    bucket = (tl.log(gap) / time_bucket_divisor).to(tl.int32)
    bucket = tl.minimum(tl.maximum(bucket, 0), NUM_BUCKETS)
    s += tl.load(POS + distance, mask=mask, other=0.0).to(tl.float32)
    s += tl.load(TSW + bucket, mask=mask, other=0.0).to(tl.float32)
    return s, mask, distance, bucket


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
        q = tl.load(
            Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_dqk[None, :],
            mask=(offs_m[:, None] < length) & (offs_dqk[None, :] < DQK),
            other=0.0,
        )
        tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
        end_n = tl.minimum(start_m + BLOCK_M, length)
        for start_n in range(0, end_n, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(
                K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_dqk[None, :],
                mask=(offs_n[:, None] < length) & (offs_dqk[None, :] < DQK),
                other=0.0,
            )
            v = tl.load(
                V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_dv[None, :],
                mask=(offs_n[:, None] < length) & (offs_dv[None, :] < DV),
                other=0.0,
            )
            ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
            s, mask, distance, bucket = _scores(
                q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
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
        k = tl.load(
            K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_dqk[None, :],
            mask=(offs_n[:, None] < length) & (offs_dqk[None, :] < DQK),
            other=0.0,
        )
        v = tl.load(
            V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_dv[None, :],
            mask=(offs_n[:, None] < length) & (offs_dv[None, :] < DV),
            other=0.0,
        )
        ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
        first_m = (start_n // BLOCK_M) * BLOCK_M
        for start_m in range(first_m, length, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q = tl.load(
                Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_dqk[None, :],
                mask=(offs_m[:, None] < length) & (offs_dqk[None, :] < DQK),
                other=0.0,
            )
            do = tl.load(
                DO + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_dv[None, :],
                mask=(offs_m[:, None] < length) & (offs_dv[None, :] < DV),
                other=0.0,
            )
            tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
            s, mask, distance, bucket = _scores(
                q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            sig = tl.sigmoid(s)
            a = tl.where(mask, s * sig * inv_normalizer, 0.0)
            dv += tl.dot(tl.trans(a).to(do.dtype), do)
            da = tl.dot(do, tl.trans(v))
            ds = tl.where(mask, da * inv_normalizer * sig * (1.0 + s * (1.0 - sig)), 0.0)
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
    DPOS,
    DTSW,
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
    """dQ for one query tile (DQ has Q's strides) and the bias-table gradients (float32 atomics)."""
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
        q = tl.load(
            Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_dqk[None, :],
            mask=(offs_m[:, None] < length) & (offs_dqk[None, :] < DQK),
            other=0.0,
        )
        do = tl.load(
            DO + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_dv[None, :],
            mask=(offs_m[:, None] < length) & (offs_dv[None, :] < DV),
            other=0.0,
        )
        tsn = tl.load(TSN + b * stride_tb + offs_m, mask=offs_m < length, other=0)
        end_n = tl.minimum(start_m + BLOCK_M, length)
        for start_n in range(0, end_n, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(
                K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_dqk[None, :],
                mask=(offs_n[:, None] < length) & (offs_dqk[None, :] < DQK),
                other=0.0,
            )
            v = tl.load(
                V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_dv[None, :],
                mask=(offs_n[:, None] < length) & (offs_dv[None, :] < DV),
                other=0.0,
            )
            ts = tl.load(TS + b * stride_tb + offs_n, mask=offs_n < length, other=0)
            s, mask, distance, bucket = _scores(
                q, k, offs_m, offs_n, tsn, ts, length, POS, TSW, time_bucket_divisor, NUM_BUCKETS
            )
            sig = tl.sigmoid(s)
            da = tl.dot(do, tl.trans(v))
            ds = tl.where(mask, da * inv_normalizer * sig * (1.0 + s * (1.0 - sig)), 0.0)
            dq += tl.dot(ds.to(k.dtype), k)
            tl.atomic_add(DPOS + distance, ds, mask=mask)
            tl.atomic_add(DTSW + bucket, ds, mask=mask)
    tl.store(
        DQ + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_dqk[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=(offs_m[:, None] < N) & (offs_dqk[None, :] < DQK),
    )


def _block_dim(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


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
        timestamps: Tensor,
        next_timestamps: Tensor,
        lengths: Tensor,
        normalizer: float,
        time_bucket_divisor: float,
        block_m: int,
        block_n: int,
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
        grid = (triton.cdiv(n, block_m), b * h)
        _hstu_fwd[grid](
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
        )
        ctx.save_for_backward(q, k, v, position_weights, time_weights, timestamps, next_timestamps, lengths)
        ctx.normalizer = normalizer
        ctx.time_bucket_divisor = time_bucket_divisor
        ctx.blocks = (block_m, block_n)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, position_weights, time_weights, timestamps, next_timestamps, lengths = ctx.saved_tensors
        block_m, block_n = ctx.blocks
        b, n, h, dqk = q.shape
        dv_dim = v.shape[-1]
        grad_out = grad_out.contiguous().to(v.dtype)
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        dpos = torch.zeros(position_weights.shape, dtype=torch.float32, device=q.device)
        dtsw = torch.zeros(time_weights.shape, dtype=torch.float32, device=q.device)
        # Gradients are allocated contiguous; contiguous copies of q/k/v make one stride set serve both.
        qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
        common = {
            "N": n,
            "H": h,
            "DQK": dqk,
            "DV": dv_dim,
            "inv_normalizer": 1.0 / ctx.normalizer,
            "time_bucket_divisor": ctx.time_bucket_divisor,
            "NUM_BUCKETS": time_weights.shape[0] - 1,
            "BLOCK_M": block_m,
            "BLOCK_N": block_n,
            "BLOCK_DQK": _block_dim(dqk),
            "BLOCK_DV": _block_dim(dv_dim),
        }
        strides = (
            *qc.stride()[:3],
            *kc.stride()[:3],
            *vc.stride()[:3],
            *grad_out.stride()[:3],
            timestamps.stride(0),
        )
        _hstu_bwd_dkdv[(triton.cdiv(n, block_n), b * h)](
            qc,
            kc,
            vc,
            grad_out,
            dk,
            dv,
            position_weights,
            time_weights,
            timestamps,
            next_timestamps,
            lengths,
            *strides,
            **common,
        )
        _hstu_bwd_dq[(triton.cdiv(n, block_m), b * h)](
            qc,
            kc,
            vc,
            grad_out,
            dq,
            dpos,
            dtsw,
            position_weights,
            time_weights,
            timestamps,
            next_timestamps,
            lengths,
            *strides,
            **common,
        )
        return (
            dq,
            dk,
            dv,
            dpos.to(position_weights.dtype),
            dtsw.to(time_weights.dtype),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
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
    block_m: int = 64,
    block_n: int = 64,
) -> Tensor:
    """Fused HSTU attention; arguments and result as ``hstu_attention_reference`` ((B, N, H, d_v) output).

    ``block_m`` / ``block_n`` are the query / key tile sizes (powers of two, >= 16).
    """
    n = q.shape[1]
    if position_weights.shape[0] < n:
        raise ValueError(f"sequence length {n} exceeds the position bias table ({position_weights.shape[0]})")
    if q.shape[:3] != k.shape[:3] or q.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
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
    )
