"""What the HSTU attention kernels are launched with: per-row inputs, launch options and shared arguments.

:class:`HSTUSequences` bundles the inputs that take no gradient (timestamps, lengths and the two
constants), :class:`HSTULaunch` the tile sizes and Triton options, and :func:`kernel_arguments` the
arguments every kernel of :mod:`rails.kernels.hstu_attention_forward` and
:mod:`rails.kernels.hstu_attention_backward` shares (bias tables, timestamps, strides, padded head dims).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rails.kernels.hstu_attention_tiles import block_dim


@dataclass(frozen=True)
class HSTUSequences:
    """Inputs of the HSTU attention that take no gradient.

    Args:
        timestamps: (B, N) int64 key timestamps.
        next_timestamps: (B, N) int64 timestamp of the item each position predicts.
        lengths: (B,) int64 valid positions per row.
        normalizer: the constant n that SiLU(S) is divided by.
        time_bucket_divisor: bucket width of the log time gaps.
    """

    timestamps: Tensor
    next_timestamps: Tensor
    lengths: Tensor
    normalizer: float
    time_bucket_divisor: float

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """(timestamps, next_timestamps, lengths), in the order the kernels take them."""
        return self.timestamps, self.next_timestamps, self.lengths

    def prepared(self) -> HSTUSequences:
        """int64 contiguous tensors and float constants, as the kernels read them."""
        ts, next_ts, lengths = (x.to(torch.int64).contiguous() for x in self.tensors)
        return HSTUSequences(ts, next_ts, lengths, float(self.normalizer), float(self.time_bucket_divisor))


@dataclass(frozen=True)
class HSTULaunch:
    """Tile sizes (query ``block_m``, key ``block_n``) and Triton launch options of every kernel."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    @classmethod
    def choose(
        cls, n: int, block_m: int | None, block_n: int | None, num_warps: int | None, num_stages: int
    ) -> HSTULaunch:
        """Fill in the defaults for sequence length ``n`` and check the tile sizes.

        Tiles: 32 up to N = 128 (less padding), else 64; they must be powers of two >= 16.
        ``num_warps``: 8 for 64-row tiles (4 warps need 255 registers and spill at d = 32 on sm_90), else 4.
        """
        default = 32 if n <= 128 else 64
        block_m, block_n = block_m or default, block_n or default
        for name, size in (("block_m", block_m), ("block_n", block_n)):
            if size < 16 or size & (size - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {size}")
        if num_warps is None:
            num_warps = 8 if max(block_m, block_n) >= 64 else 4
        return cls(block_m, block_n, num_warps, num_stages)


def kernel_arguments(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    tables: tuple[Tensor, Tensor],
    seq: HSTUSequences,
    launch: HSTULaunch,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional arguments after the kernel's own pointers, and keyword arguments, shared by every kernel.

    Args:
        q: (B, N, H, d_qk) queries, k keys of the same shape, v (B, N, H, d_v) values; last dims contiguous.
        o: (B, N, H, d_v) output (forward) or output gradient (backward).
        tables: contiguous (P,) position and (T + 1,) time-bucket bias tables.
        seq: prepared per-row inputs (:meth:`HSTUSequences.prepared`).
        launch: launch options (``num_warps``, ``num_stages``).

    Returns:
        (tables, timestamps, lengths and strides of q, k, v, o and the timestamps) and the keyword
        arguments ``inv_normalizer``, ``time_bucket_divisor``, ``NUM_BUCKETS``, ``BLOCK_DQK``, ``BLOCK_DV``,
        ``num_warps``, ``num_stages``.
    """
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], seq.timestamps.stride(0))
    keywords = {
        "inv_normalizer": 1.0 / seq.normalizer,
        "time_bucket_divisor": seq.time_bucket_divisor,
        "NUM_BUCKETS": tables[1].shape[0] - 1,
        "BLOCK_DQK": block_dim(q.shape[-1]),
        "BLOCK_DV": block_dim(v.shape[-1]),
        "num_warps": launch.num_warps,
        "num_stages": launch.num_stages,
    }
    return (*tables, *seq.tensors, *strides), keywords


def head_tile_keywords(q: Tensor, v: Tensor, launch: HSTULaunch) -> dict[str, int]:
    """Keyword arguments of the per-(tile, sequence, head) kernels: N, H, DQK, DV, BLOCK_M, BLOCK_N."""
    _, n, h, dqk = q.shape
    return {
        "N": n,
        "H": h,
        "DQK": dqk,
        "DV": v.shape[-1],
        "BLOCK_M": launch.block_m,
        "BLOCK_N": launch.block_n,
    }
