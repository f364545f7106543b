"""Fused exact Mixture-of-Logits scoring + top-k (Triton): no (B, X, P) logits or (B, X) scores in memory.

One program handles a block of ``BLOCK_B`` queries and one contiguous split of the corpus. It walks its
split in tiles of ``BLOCK_X`` items; every item tile is loaded once for the whole query block. Per tile,
with ``R = BLOCK_X * BLOCK_B`` (item, query) rows (row ``r = x * BLOCK_B + b``), in registers / shared memory:

1. pair logits, one real MMA per item component j:
   ``S_j = G_j (BLOCK_X, d_P) @ F^T (d_P, BLOCK_B * P_Q)`` (the query block's components, pre-scaled by
   1/tau), reshaped to (R, P_Q); the P_X pieces are interleaved (``tl.join``) into ``L`` (R, P) with
   kernel pair order ``c = i * PX_PAD + j``. Exactly the multiply-adds the logits need (no block-diagonal
   expansion); the host permutes every pair-indexed gating weight to that order;
2. the query-item gating MLP ``qi = SiLU(L W1 + b1) W2 + b2`` as two MMAs over chunks of ``BLOCK_H``
   hidden units (bounded registers), ``s = SiLU(q_gate * i_gate + qi)`` ("glu_silu"), ``pi = softmax_P(s)``,
   ``phi = sum_p pi_p L_p`` -> (BLOCK_B, BLOCK_X);
3. a running top-``K_PAD`` per query: scores and positions packed into order-preserving int64 keys (score
   bits high, ``2^32 - 1 - position`` low, so ties prefer the lower position). A tile is merged only when
   one of its keys beats some query's current K_PAD-th key; exclusions (history positions) are applied at
   merge time; the merge is a bitonic half-cleaner (``max(ascending buffer, descending tile top)``) + sort.

Each program writes K_PAD keys per query; the host takes the top k over the splits ((B, splits * K_PAD),
tiny) and decodes scores and positions. Results follow the package's order: score descending, position
ascending on ties. Limits: k <= 256 (``MAX_FUSED_K``), P_X <= 8 (``MAX_ITEM_COMPONENTS``), eval-mode heads
with "glu_silu" gating. On CUDA the SiLUs use ``tanh.approx`` (one MUFU op instead of exp + reciprocal).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rails.kernels import triton_usable

log = logging.getLogger(__name__)

MAX_FUSED_K = 256
MAX_ITEM_COMPONENTS = 8
EMPTY_KEY = -(2**63) + 1  # below every packed finite or infinite score

try:  # Triton is optional: the module imports without it, the kernel then is unavailable.
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources
except ImportError:  # pragma: no cover - exercised only without triton
    triton = None
    tl = None
    OutOfResources = RuntimeError  # noqa: N806


def _next_pow2(n: int, floor: int = 16) -> int:
    return max(floor, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


if triton is not None:

    @triton.jit
    def _silu(x, FAST: tl.constexpr):
        """x * sigmoid(x); FAST: 0.5 x (1 + tanh(x / 2)) with PTX tanh.approx (CUDA only)."""
        if FAST:
            t = tl.inline_asm_elementwise(
                "tanh.approx.f32 $0, $1;", "=r,r", [0.5 * x], dtype=tl.float32, is_pure=True, pack=1
            )
            y = 0.5 * x * (1.0 + t)
        else:
            y = x * tl.sigmoid(x)
        return y

    @triton.jit
    def _component_logits(
        G,
        rows,
        valid,
        stride_g,
        ft,
        j: tl.constexpr,
        PX: tl.constexpr,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        BLOCK_X: tl.constexpr,
        BLOCK_B: tl.constexpr,
        PQ_PAD: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """(R, PQ_PAD) logits of item component j against every query component of the block."""
        d = tl.arange(0, D_PAD)
        g = tl.load(
            G + rows[:, None] * stride_g + j * D + d[None, :],
            mask=valid[:, None] & (d[None, :] < D) & (j < PX),
            other=0.0,
        )
        s = tl.dot(g, ft, input_precision=PRECISION)  # (BLOCK_X, BLOCK_B * PQ_PAD) fp32
        return tl.reshape(s, (BLOCK_X * BLOCK_B, PQ_PAD))

    @triton.jit
    def _mol_topk_kernel(
        G,  # (X, P_X * d_P) item components
        IG,  # (X, P) item gate part (original pair order)
        FT,  # (num_qblocks, D_PAD, BLOCK_B * PQ_PAD) query components / tau, transposed, 0-padded
        QG,  # (B_PAD, P_PAD) float32 query gate part, kernel pair order, 0-padded
        PERM,  # (P_PAD,) int32 original pair index of each kernel column, -1 = padding
        W1,  # (P_PAD, H_PAD) query-item gate, first Linear (transposed, kernel order, 0-padded)
        B1,  # (H_PAD,) float32
        W2,  # (H_PAD, P_PAD) second Linear (transposed, kernel order, 0-padded)
        B2,  # (P_PAD,) float32
        EXCL,  # (B_PAD, E_PAD) int64 excluded positions, -1 = none
        OUT,  # (B_PAD, num_splits, K_PAD) int64 keys
        num_queries,
        num_items,
        items_per_split,
        num_splits,
        stride_g,
        stride_ig,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        PX: tl.constexpr,
        PX_PAD: tl.constexpr,
        PQ_PAD: tl.constexpr,
        H_PAD: tl.constexpr,
        BLOCK_H: tl.constexpr,
        E_PAD: tl.constexpr,
        BLOCK_E: tl.constexpr,
        BLOCK_X: tl.constexpr,
        BLOCK_B: tl.constexpr,
        K_PAD: tl.constexpr,
        HAS_EXCL: tl.constexpr,
        PRECISION: tl.constexpr,
        FAST_SILU: tl.constexpr,
    ):
        P_PAD: tl.constexpr = PQ_PAD * PX_PAD
        R: tl.constexpr = BLOCK_X * BLOCK_B
        qblock = tl.program_id(0)  # fastest: programs sharing an item split run together (L2 reuse)
        split = tl.program_id(1)
        qb = qblock * BLOCK_B + tl.arange(0, BLOCK_B)
        q_ok = qb < num_queries
        kd = tl.arange(0, D_PAD)
        cols = tl.arange(0, BLOCK_B * PQ_PAD)
        ft = tl.load(
            FT + qblock * D_PAD * BLOCK_B * PQ_PAD + kd[:, None] * (BLOCK_B * PQ_PAD) + cols[None, :]
        )
        p = tl.arange(0, P_PAD)
        perm = tl.load(PERM + p)
        pair_ok = perm >= 0
        qg = tl.load(QG + qb[:, None] * P_PAD + p[None, :])  # (BLOCK_B, P_PAD)
        b2 = tl.load(B2 + p)
        hb = tl.arange(0, BLOCK_H)
        start = split * items_per_split
        end = tl.minimum(start + items_per_split, num_items)
        buf = tl.full((BLOCK_B, K_PAD), -9223372036854775807, tl.int64)  # ascending per query
        thr = tl.min(buf, 1)
        for tile in range(start, end, BLOCK_X):
            x = tile + tl.arange(0, BLOCK_X)
            valid = x < end
            rows = x.to(tl.int64)
            # 1. pair logits (R, P_PAD), column i * PX_PAD + j
            s0 = _component_logits(
                G, rows, valid, stride_g, ft, 0, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
            )
            if PX_PAD == 1:
                logits = s0
            elif PX_PAD == 2:
                s1 = _component_logits(
                    G, rows, valid, stride_g, ft, 1, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                logits = tl.reshape(tl.join(s0, s1), (R, P_PAD))
            elif PX_PAD == 4:
                s1 = _component_logits(
                    G, rows, valid, stride_g, ft, 1, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s2 = _component_logits(
                    G, rows, valid, stride_g, ft, 2, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s3 = _component_logits(
                    G, rows, valid, stride_g, ft, 3, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                logits = tl.reshape(tl.join(tl.join(s0, s2), tl.join(s1, s3)), (R, P_PAD))
            else:
                s1 = _component_logits(
                    G, rows, valid, stride_g, ft, 1, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s2 = _component_logits(
                    G, rows, valid, stride_g, ft, 2, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s3 = _component_logits(
                    G, rows, valid, stride_g, ft, 3, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s4 = _component_logits(
                    G, rows, valid, stride_g, ft, 4, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s5 = _component_logits(
                    G, rows, valid, stride_g, ft, 5, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s6 = _component_logits(
                    G, rows, valid, stride_g, ft, 6, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                s7 = _component_logits(
                    G, rows, valid, stride_g, ft, 7, PX, D, D_PAD, BLOCK_X, BLOCK_B, PQ_PAD, PRECISION
                )
                low = tl.join(tl.join(s0, s4), tl.join(s2, s6))
                high = tl.join(tl.join(s1, s5), tl.join(s3, s7))
                logits = tl.reshape(tl.join(low, high), (R, P_PAD))
            # 2. gating MLP over hidden chunks, then glu_silu + softmax + mixture
            operand = logits.to(W1.dtype.element_ty)
            qi = tl.zeros((R, P_PAD), tl.float32) + b2[None, :]
            for h0 in tl.static_range(0, H_PAD, BLOCK_H):
                w1 = tl.load(W1 + p[:, None] * H_PAD + (h0 + hb)[None, :])
                hidden = tl.dot(operand, w1, input_precision=PRECISION) + tl.load(B1 + h0 + hb)[None, :]
                hidden = _silu(hidden, FAST_SILU)
                w2 = tl.load(W2 + (h0 + hb)[:, None] * P_PAD + p[None, :])
                qi = tl.dot(hidden.to(W2.dtype.element_ty), w2, acc=qi, input_precision=PRECISION)
            ig = tl.load(
                IG + rows[:, None] * stride_ig + perm[None, :],
                mask=valid[:, None] & pair_ok[None, :],
                other=0.0,
            ).to(tl.float32)  # (BLOCK_X, P_PAD)
            gate = qg[None, :, :] * ig[:, None, :] + tl.reshape(qi, (BLOCK_X, BLOCK_B, P_PAD))
            gate = _silu(gate, FAST_SILU)
            gate = tl.where(pair_ok[None, None, :], gate, -float("inf"))
            weights = tl.exp(gate - tl.max(gate, 2)[:, :, None])
            logits3 = tl.reshape(logits, (BLOCK_X, BLOCK_B, P_PAD))
            phi = tl.trans(tl.sum(weights * logits3, 2) / tl.sum(weights, 2))  # (BLOCK_B, BLOCK_X)
            # 3. packed keys and the running top-K_PAD of every query
            bits = phi.to(tl.int32, bitcast=True)
            ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
            key = ordered * 4294967296 + (4294967295 - rows)[None, :]
            key = tl.where(q_ok[:, None] & valid[None, :], key, -9223372036854775807)
            beats = (tl.max(key, 1) > thr).to(tl.int32)
            if tl.max(beats, 0) > 0:
                if HAS_EXCL:
                    eb = tl.arange(0, BLOCK_E)
                    for e0 in tl.static_range(0, E_PAD, BLOCK_E):
                        excl = tl.load(EXCL + qb[:, None] * E_PAD + (e0 + eb)[None, :])  # (BLOCK_B, BLOCK_E)
                        hit = tl.max((rows[None, :, None] == excl[:, None, :]).to(tl.int32), 2)
                        key = tl.where(hit > 0, -9223372036854775807, key)
                if BLOCK_X >= K_PAD:
                    best = tl.topk(key, K_PAD, dim=1)  # descending
                else:
                    wide = key
                    if K_PAD >= 2 * BLOCK_X:
                        wide = tl.reshape(
                            tl.join(wide, tl.full((BLOCK_B, BLOCK_X), -9223372036854775807, tl.int64)),
                            (BLOCK_B, 2 * BLOCK_X),
                        )
                    if K_PAD >= 4 * BLOCK_X:
                        wide = tl.reshape(
                            tl.join(wide, tl.full((BLOCK_B, 2 * BLOCK_X), -9223372036854775807, tl.int64)),
                            (BLOCK_B, 4 * BLOCK_X),
                        )
                    if K_PAD >= 8 * BLOCK_X:
                        wide = tl.reshape(
                            tl.join(wide, tl.full((BLOCK_B, 4 * BLOCK_X), -9223372036854775807, tl.int64)),
                            (BLOCK_B, 8 * BLOCK_X),
                        )
                    if K_PAD >= 16 * BLOCK_X:
                        wide = tl.reshape(
                            tl.join(wide, tl.full((BLOCK_B, 8 * BLOCK_X), -9223372036854775807, tl.int64)),
                            (BLOCK_B, 16 * BLOCK_X),
                        )
                    best = tl.sort(wide, dim=1, descending=True)
                buf = tl.sort(tl.maximum(buf, best), dim=1)  # bitonic half-cleaner: top K_PAD of both
                thr = tl.min(buf, 1)
        slots = tl.arange(0, K_PAD)
        tl.store(OUT + (qb[:, None] * num_splits + split) * K_PAD + slots[None, :], buf)


def fused_mol_topk_supported(head: object, query_state: dict, item_state: dict, k: int) -> str | None:
    """None when the fused kernel applies to this head/state/k on CUDA, else the reason it does not."""
    from rails.models.similarity.mol import MoLSimilarity

    if not isinstance(head, MoLSimilarity):
        return f"head is {type(head).__name__}, not MoLSimilarity"
    if head.training:
        return "head is in training mode (softmax dropout)"
    if head.gating.combination != "glu_silu":
        return f"gating_combination is {head.gating.combination!r}, the kernel implements 'glu_silu'"
    if k > MAX_FUSED_K:
        return f"k={k} exceeds MAX_FUSED_K={MAX_FUSED_K}"
    if not {"components", "gate"} <= set(query_state) or not {"components", "gate"} <= set(item_state):
        return "states lack 'components' / 'gate'"
    if item_state["components"].shape[-2] > MAX_ITEM_COMPONENTS:
        return f"P_X={item_state['components'].shape[-2]} exceeds MAX_ITEM_COMPONENTS={MAX_ITEM_COMPONENTS}"
    device = item_state["components"].device
    if device.type != "cuda" and not (device.type == "cpu" and triton_usable("cpu")):
        return f"device {device} is neither CUDA nor CPU under TRITON_INTERPRET=1"
    if not triton_usable(device):
        return "triton is not importable"
    return None


def decode_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Packed int64 keys -> (float32 scores, int64 positions); empty keys -> (-inf, -1)."""
    ordered = keys >> 32
    positions = 4294967295 - (keys & 0xFFFFFFFF)
    bits = torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF).to(torch.int32)
    scores = bits.view(torch.float32).clone()
    empty = keys <= EMPTY_KEY
    return scores.masked_fill(empty, -math.inf), positions.masked_fill(empty, -1)


@dataclass(frozen=True)
class FusedTopKConfig:
    """Tile sizes of the fused kernel (None = chosen from the shapes; see :func:`default_config`).

    Attributes:
        block_b: queries per program (power of two; BLOCK_B * PQ_PAD >= 16).
        block_x: items per tile (power of two >= 16).
        block_h: hidden units of the gating MLP per chunk (power of two >= 16).
        num_warps: warps per program.
        num_splits: corpus splits (default: about ``2 * SMs / query blocks`` on CUDA, 1 on CPU).
    """

    block_b: int | None = None
    block_x: int | None = None
    block_h: int | None = None
    num_warps: int = 8
    num_splits: int | None = None


@dataclass(frozen=True)
class _Layout:
    """Padded sizes: d_P, P_X, P_Q per query block, P, H."""

    d_pad: int
    px_pad: int
    pq_pad: int
    p_pad: int
    h_pad: int


def pair_layout(num_query: int, num_item: int, dim: int, hidden: int) -> tuple[_Layout, Tensor]:
    """Kernel pair layout and (P_PAD,) int64 original pair index per kernel column (-1 = padding).

    Kernel column ``c = i * PX_PAD + j`` holds pair ``p = i * P_X + j`` (query component i, item component j).
    """
    px_pad = _next_pow2(num_item, floor=1)
    pq_pad = max(_next_pow2(num_query, floor=1), 16 // px_pad)
    layout = _Layout(_next_pow2(dim), px_pad, pq_pad, pq_pad * px_pad, _next_pow2(hidden))
    i = torch.arange(pq_pad)[:, None]
    j = torch.arange(px_pad)[None, :]
    perm = torch.where((i < num_query) & (j < num_item), i * num_item + j, -1).flatten()
    return layout, perm


def default_config(batch: int, layout: _Layout, config: FusedTopKConfig) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_X, BLOCK_H): about 256 (item, query) rows per tile, 64 hidden units per chunk."""
    block_b = config.block_b or min(16, _next_pow2(batch, floor=1))
    block_b = max(block_b, 16 // layout.pq_pad, 1)
    block_x = config.block_x or max(16, 256 // block_b)
    block_h = config.block_h or min(64, layout.h_pad)
    for key, value, floor in (("block_b", block_b, 1), ("block_x", block_x, 16), ("block_h", block_h, 16)):
        if value < floor or value & (value - 1):
            raise ValueError(f"FusedTopKConfig.{key} must be a power of two >= {floor}, got {value}")
    if block_b * layout.pq_pad < 16:
        raise ValueError(
            f"FusedTopKConfig.block_b={block_b} too small: block_b * {layout.pq_pad} must be >= 16"
        )
    if layout.h_pad % block_h:
        raise ValueError(
            f"FusedTopKConfig.block_h={block_h} must divide the padded hidden width {layout.h_pad}"
        )
    return block_b, block_x, block_h


def fused_mol_topk(
    head: torch.nn.Module,
    query_state: dict[str, Tensor],
    item_state: dict[str, Tensor],
    k: int,
    exclude_positions: Tensor | None = None,
    config: FusedTopKConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact MoL top-k with the fused kernel.

    Args:
        head: an eval-mode :class:`~rails.models.similarity.mol.MoLSimilarity` ("glu_silu" gating).
        query_state: ``{"components": (B, P_Q, d_P), "gate": (B, P)}``.
        item_state: ``{"components": (X, P_X, d_P), "gate": (X, P)}``; bf16 components run the matmuls
            in bf16 (fp32 accumulation, fast SiLU on CUDA), fp32 components in exact fp32 ("ieee").
        k: results per query (<= 256).
        exclude_positions: (B, H) corpus positions to drop (-1 = none).
        config: tile sizes (default: chosen from the shapes).

    Returns:
        (B, min(k, X)) float32 scores sorted descending and int64 corpus positions (empty: -inf, -1).
    """
    if triton is None:
        raise RuntimeError("fused_mol_topk needs triton")
    if k < 1 or k > MAX_FUSED_K:
        raise ValueError(f"fused_mol_topk supports 1 <= k <= {MAX_FUSED_K}, got {k}")
    config = config or FusedTopKConfig()
    item_components = item_state["components"]
    num_items, num_item_comp, dim = item_components.shape
    query_components = query_state["components"]
    batch, num_query_comp, _ = query_components.shape
    if num_item_comp > MAX_ITEM_COMPONENTS:
        raise ValueError(f"fused_mol_topk supports P_X <= {MAX_ITEM_COMPONENTS}, got {num_item_comp}")
    device = item_components.device
    width = min(k, num_items)
    if num_items == 0 or batch == 0:
        return torch.empty(batch, 0, device=device), torch.empty(batch, 0, dtype=torch.int64, device=device)

    compute_dtype = torch.bfloat16 if item_components.dtype == torch.bfloat16 else torch.float32
    precision = None if compute_dtype == torch.bfloat16 else "ieee"  # bf16 operands: default dot
    qi_in, qi_out = head.gating.qi_part[1], head.gating.qi_part[3]
    hidden = qi_in.out_features
    layout, perm = pair_layout(num_query_comp, num_item_comp, dim, hidden)
    block_b, block_x, block_h = default_config(batch, layout, config)
    k_pad = _next_pow2(width)
    num_qblocks = triton.cdiv(batch, block_b)
    batch_pad = num_qblocks * block_b
    perm = perm.to(device)
    kept = perm >= 0
    src = perm.clamp_min(0)

    items = item_components.reshape(num_items, num_item_comp * dim).to(compute_dtype).contiguous()
    item_gate = item_state["gate"].contiguous()
    # FT[qblock, d, b * PQ_PAD + i] = f_{qblock * BLOCK_B + b, i}[d] / tau
    ft = torch.zeros(batch_pad, layout.pq_pad, layout.d_pad, dtype=torch.float32, device=device)
    ft[:batch, :num_query_comp, :dim] = query_components.float() / head.temperature
    ft = (
        ft.view(num_qblocks, block_b * layout.pq_pad, layout.d_pad)
        .transpose(1, 2)
        .to(compute_dtype)
        .contiguous()
    )
    query_gate = torch.zeros(batch_pad, layout.p_pad, dtype=torch.float32, device=device)
    query_gate[:batch] = torch.where(kept, query_state["gate"].float()[:, src], 0.0)
    w1 = torch.zeros(layout.p_pad, layout.h_pad, dtype=torch.float32, device=device)
    w1[:, :hidden] = torch.where(kept[:, None], qi_in.weight.detach().T.float()[src], 0.0)
    w2 = torch.zeros(layout.h_pad, layout.p_pad, dtype=torch.float32, device=device)
    w2[:hidden] = torch.where(kept[None, :], qi_out.weight.detach().T.float()[:, src], 0.0)
    b1 = torch.zeros(layout.h_pad, dtype=torch.float32, device=device)
    b2 = torch.zeros(layout.p_pad, dtype=torch.float32, device=device)
    if qi_in.bias is not None:
        b1[:hidden] = qi_in.bias.detach().float()
    if qi_out.bias is not None:
        b2 = torch.where(kept, qi_out.bias.detach().float()[src], 0.0)

    has_excl = exclude_positions is not None and exclude_positions.shape[1] > 0
    e_width = exclude_positions.shape[1] if has_excl else 1
    e_pad = _next_pow2(e_width, floor=2)
    excl = torch.full((batch_pad, e_pad), -1, dtype=torch.int64, device=device)
    if has_excl:
        excl[:batch, :e_width] = exclude_positions

    num_splits = config.num_splits
    if num_splits is None:
        if device.type == "cuda":
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            num_splits = max(1, min(triton.cdiv(num_items, block_x), triton.cdiv(2 * sms, num_qblocks)))
        else:
            num_splits = 1
    items_per_split = triton.cdiv(triton.cdiv(num_items, num_splits), block_x) * block_x
    num_splits = triton.cdiv(num_items, items_per_split)
    out = torch.empty(batch_pad, num_splits, k_pad, dtype=torch.int64, device=device)

    def _launch(stages: int, fast_silu: bool) -> None:
        _mol_topk_kernel[(num_qblocks, num_splits)](
            items,
            item_gate,
            ft,
            query_gate,
            perm.to(torch.int32),
            w1.to(compute_dtype),
            b1,
            w2.to(compute_dtype),
            b2.contiguous(),
            excl,
            out,
            batch,
            num_items,
            items_per_split,
            num_splits,
            items.stride(0),
            item_gate.stride(0),
            D=dim,
            D_PAD=layout.d_pad,
            PX=num_item_comp,
            PX_PAD=layout.px_pad,
            PQ_PAD=layout.pq_pad,
            H_PAD=layout.h_pad,
            BLOCK_H=block_h,
            E_PAD=e_pad,
            BLOCK_E=min(e_pad, 16),
            BLOCK_X=block_x,
            BLOCK_B=block_b,
            K_PAD=k_pad,
            HAS_EXCL=has_excl,
            PRECISION=precision,
            FAST_SILU=fast_silu,
            num_warps=config.num_warps,
            num_stages=stages,
        )

    fast = device.type == "cuda" and compute_dtype == torch.bfloat16
    _launch_with_fallbacks(_launch, fast)
    keys = torch.topk(out[:batch].view(batch, -1), width, dim=1).values
    return decode_keys(keys)


def _launch_with_fallbacks(launch, fast: bool) -> None:
    """Launch with 3 pipeline stages, fewer on shared-memory overflow; drop the PTX fast SiLU if it fails."""
    # Software pipelining keeps `num_stages` item tiles in shared memory; wide tiles can overflow the
    # 227 KB of an H100/H200 at the default 3 stages, so fall back to fewer.
    for stages in (3, 2, 1):
        try:
            launch(stages, fast)
            return
        except OutOfResources:
            if stages == 1:
                raise
        except Exception as err:  # noqa: BLE001 - inline PTX unsupported by this Triton/GPU: exact SiLU
            if not fast:
                raise
            log.warning("fused MoL top-k: tanh.approx SiLU failed to compile (%s); using exact SiLU", err)
            fast = False
            launch(stages, fast)
            return
