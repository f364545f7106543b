"""HSTU pointwise attention with relative position + time bias: plain-PyTorch reference and dispatch.

The attention of one HSTU layer (spec §4.2, §4.3), for every sequence b, head h, query i and key j <= i:

    S_ij = <Q_i, K_j> + w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]      (no 1/sqrt(d) scaling)
    A_ij = SiLU(S_ij) / n                                                  (no softmax, n a constant)
    O_i  = sum_{j <= i, j < L_b} A_ij V_j

with ``bucket(d) = clamp(trunc(ln(max(|d|, 1)) / divisor), 0, num_buckets)``. The same bias is shared by
all heads. Rows i >= L_b (padding) are returned as zeros.

:func:`hstu_attention_reference` materialises the (B, H, N, N) scores; :func:`hstu_attention` dispatches
to it or to the fused Triton kernel of :mod:`rails.kernels.hstu_attention_triton` (never materialises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

AttentionImpl = Literal["auto", "torch", "triton"]


def time_buckets(delta: Tensor, divisor: float, num_buckets: int) -> Tensor:
    """Log-bucketise timestamp gaps (spec §4.3).

    Args:
        delta: int64 gaps in seconds, any shape.
        divisor: bucket width in natural-log units (0.301 in the paper, ~ log base 2.7^0.3).
        num_buckets: largest bucket index (128); the table has ``num_buckets + 1`` rows.

    Returns:
        int64 buckets of ``delta``'s shape, ``trunc(ln(max(|delta|, 1)) / divisor)`` clamped to
        ``[0, num_buckets]``; the log is taken in float32 as in the reference implementation.
    """
    magnitude = delta.abs().clamp_min(1).to(torch.float32)
    return (torch.log(magnitude) / divisor).to(torch.int64).clamp(0, num_buckets)


class _TableLookup(torch.autograd.Function):
    """``table[index]`` whose backward is a weighted histogram (``bincount``) instead of scatter-add.

    The time-bias table has 129 rows indexed by (B, N, N) buckets: autograd's default index backward
    issues one atomic add per element into a handful of addresses, which serialises on GPUs.
    """

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        ctx.dtype = table.dtype
        return table[index]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (index,) = ctx.saved_tensors
        flat = torch.bincount(index.reshape(-1), weights=grad.reshape(-1).float(), minlength=ctx.rows)
        return flat.to(ctx.dtype), None


def table_lookup(table: Tensor, index: Tensor) -> Tensor:
    """(R,) table, int64 index of any shape -> table[index], with a histogram backward."""
    return _TableLookup.apply(table, index)


def relative_bias(
    position_weights: Tensor,
    time_weights: Tensor,
    timestamps: Tensor,
    next_timestamps: Tensor,
    time_bucket_divisor: float,
) -> Tensor:
    """Materialised (B, N, N) bias ``w_pos[i - j] + w_ts[bucket(next_ts_i - ts_j)]`` (0 where j > i).

    Args:
        position_weights: (P,) table indexed by the distance i - j, P >= N.
        time_weights: (T + 1,) table indexed by the time bucket.
        timestamps: (B, N) int64 key times ts_j.
        next_timestamps: (B, N) int64 times of the item each query position predicts.
        time_bucket_divisor: see :func:`time_buckets`.
    """
    n = timestamps.shape[1]
    idx = torch.arange(n, device=timestamps.device)
    distance = (idx[:, None] - idx[None, :]).clamp_min(0)  # (N, N)
    position = table_lookup(position_weights, distance)  # (N, N); histogram backward, no atomics
    buckets = time_buckets(
        next_timestamps[:, :, None] - timestamps[:, None, :],
        time_bucket_divisor,
        time_weights.shape[0] - 1,
    )  # (B, N, N)
    return position[None] + table_lookup(time_weights, buckets)


def hstu_attention_reference(
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
) -> Tensor:
    """Plain-PyTorch HSTU attention materialising the (B, H, N, N) scores.

    Args:
        q: (B, N, H, d_qk) queries.
        k: (B, N, H, d_qk) keys.
        v: (B, N, H, d_v) values.
        position_weights: (P,) relative-position bias table indexed by i - j (P >= N).
        time_weights: (T + 1,) time-bucket bias table.
        timestamps: (B, N) int64 key timestamps.
        next_timestamps: (B, N) int64 timestamp of the item each position predicts.
        lengths: (B,) int64 valid positions per row.
        normalizer: the constant n that SiLU(S) is divided by.
        time_bucket_divisor: see :func:`time_buckets`.

    Returns:
        (B, N, H, d_v) attention output, zero at padded rows, in ``v``'s dtype.
    """
    n = q.shape[1]
    if position_weights.shape[0] < n:
        raise ValueError(f"sequence length {n} exceeds the position bias table ({position_weights.shape[0]})")
    scores = torch.einsum("bihd,bjhd->bhij", q, k)  # (B, H, N, N)
    bias = relative_bias(position_weights, time_weights, timestamps, next_timestamps, time_bucket_divisor)
    scores = scores + bias[:, None].to(scores.dtype)
    idx = torch.arange(n, device=q.device)
    valid = idx[None, :] < lengths[:, None]  # (B, N)
    mask = (idx[:, None] >= idx[None, :])[None] & valid[:, None, :] & valid[:, :, None]  # (B, N, N)
    weights = torch.nn.functional.silu(scores) / normalizer * mask[:, None].to(scores.dtype)
    return torch.einsum("bhij,bjhd->bihd", weights.to(v.dtype), v)


def triton_available(device: torch.device) -> bool:
    """True when the fused kernel can run on ``device`` (CUDA + Triton, or the Triton CPU interpreter)."""
    from rails.kernels import triton_usable

    return triton_usable(device)


def hstu_attention(
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
    impl: AttentionImpl = "auto",
) -> Tensor:
    """HSTU attention (shapes as :func:`hstu_attention_reference`) with implementation dispatch.

    ``impl``: "torch" = the materialising reference; "triton" = the fused kernel (raises when Triton
    cannot run on the tensors' device); "auto" = Triton on CUDA when available, else torch.
    """
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"attention_impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    attention: Callable[..., Tensor] = hstu_attention_reference
    if impl == "triton" or (impl == "auto" and q.is_cuda and triton_available(q.device)):
        if not triton_available(q.device):
            raise ValueError(
                f"attention_impl='triton' but Triton cannot run on {q.device} "
                "(needs CUDA, or TRITON_INTERPRET=1 for CPU tensors)"
            )
        from rails.kernels.hstu_attention_triton import hstu_attention_triton

        attention = hstu_attention_triton
    tensors = (q, k, v, position_weights, time_weights, timestamps, next_timestamps, lengths)
    return attention(*tensors, normalizer, time_bucket_divisor)
