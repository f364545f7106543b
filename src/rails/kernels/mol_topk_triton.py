"""Fused exact Mixture-of-Logits scoring + top-k (Triton): no (B, X, P) logits or (B, X) scores in memory.

One program handles one query and one contiguous split of the corpus. It walks its split in tiles of
``BLOCK_X`` items and, per tile, computes in registers / shared memory:

1. the P pair logits ``L = <f_i, g_j> / tau`` as ONE matmul ``G_tile (BLOCK_X, P_X*d_P) @ F_bd (P_X*d_P, P)``,
   where ``F_bd`` is the query's components laid out block-diagonally (column ``p = i*P_X + j`` holds
   ``f_i`` in row block j), built once per query on the host. This keeps every matmul dimension
   >= 16 for tensor cores, at the price of P_X times more multiply-adds than the pair logits need;
2. the gating network: ``qi = SiLU(L W1 + b1) W2 + b2`` (two matmuls), ``s = SiLU(q_gate * i_gate + qi)``
   ("glu_silu"), ``pi = softmax_P(s)``;
3. ``phi = sum_p pi_p L_p`` (B, BLOCK_X) and exclusions (the query's history positions);
4. a running top-``K_PAD`` per program: scores and positions are packed into order-preserving int64
   keys (score bits high, ``2^32 - 1 - position`` low, so ties prefer the lower position), the tile's
   top ``K_PAD`` merged into the running buffer by a bitonic half-cleaner and a sort. Tiles whose best
   key cannot enter the buffer are skipped.

Each program writes K_PAD keys; the host takes the top k over the splits ((B, splits * K_PAD), tiny)
and decodes scores and positions. Results follow the package's order: score descending, position
ascending on ties. Limits: k <= 256 (``MAX_FUSED_K``), "glu_silu" gating without dropout. The kernel takes
tensors and numbers only; :mod:`rails.retrieval.indexes.exact` feeds it a MoL head's states and
``head.mixing()``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rails.kernels import triton_usable

MAX_FUSED_K = 256
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
    def _mol_topk_kernel(
        G,  # (X, P_X * d_P) item components
        IG,  # (X, P) item gate part
        FBD,  # (B, KD_PAD, P_PAD) block-diagonal query components
        QG,  # (B, P_PAD) float32 query gate part (0-padded)
        W1,  # (P_PAD, H_PAD) query-item gate, first Linear (transposed, 0-padded)
        B1,  # (H_PAD,) float32
        W2,  # (H_PAD, P_PAD) second Linear (transposed, 0-padded)
        B2,  # (P_PAD,) float32
        EXCL,  # (B, E_PAD) int64 excluded positions, -1 = none
        OUT,  # (B, num_splits, K_PAD) int64 keys
        num_items,
        items_per_split,
        num_splits,
        inv_tau,
        stride_g,
        stride_ig,
        KD: tl.constexpr,
        KD_PAD: tl.constexpr,
        P: tl.constexpr,
        P_PAD: tl.constexpr,
        H_PAD: tl.constexpr,
        E_PAD: tl.constexpr,
        BLOCK_X: tl.constexpr,
        K_PAD: tl.constexpr,
        HAS_EXCL: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        b = tl.program_id(0)
        split = tl.program_id(1)
        kd = tl.arange(0, KD_PAD)
        p = tl.arange(0, P_PAD)
        h = tl.arange(0, H_PAD)
        fbd = tl.load(FBD + b * KD_PAD * P_PAD + kd[:, None] * P_PAD + p[None, :])
        qg = tl.load(QG + b * P_PAD + p)
        w1 = tl.load(W1 + p[:, None] * H_PAD + h[None, :])
        b1 = tl.load(B1 + h)
        w2 = tl.load(W2 + h[:, None] * P_PAD + p[None, :])
        b2 = tl.load(B2 + p)
        excl = tl.load(EXCL + b * E_PAD + tl.arange(0, E_PAD))
        pair_ok = p < P
        start = split * items_per_split
        end = tl.minimum(start + items_per_split, num_items)
        buf = tl.full((K_PAD,), -9223372036854775807, tl.int64)  # ascending running top-K_PAD keys
        for tile in range(start, end, BLOCK_X):
            x = tile + tl.arange(0, BLOCK_X)
            valid = x < end
            rows = x.to(tl.int64)
            g = tl.load(
                G + rows[:, None] * stride_g + kd[None, :],
                mask=valid[:, None] & (kd[None, :] < KD),
                other=0.0,
            )
            logits = tl.dot(g, fbd, input_precision=PRECISION) * inv_tau  # (BLOCK_X, P_PAD) fp32
            ig = tl.load(
                IG + rows[:, None] * stride_ig + p[None, :], mask=valid[:, None] & pair_ok[None, :], other=0.0
            ).to(tl.float32)
            hidden = tl.dot(logits.to(w1.dtype), w1, input_precision=PRECISION) + b1[None, :]
            hidden = hidden * tl.sigmoid(hidden)
            qi = tl.dot(hidden.to(w2.dtype), w2, input_precision=PRECISION) + b2[None, :]
            gate = qg[None, :] * ig + qi
            gate = gate * tl.sigmoid(gate)
            gate = tl.where(pair_ok[None, :], gate, -float("inf"))
            weights = tl.exp(gate - tl.max(gate, 1)[:, None])
            phi = tl.sum(weights * logits, 1) / tl.sum(weights, 1)  # (BLOCK_X,)
            keep = valid
            if HAS_EXCL:
                hit = tl.sum((rows[:, None] == excl[None, :]).to(tl.int32), 1)
                keep = keep & (hit == 0)
            bits = phi.to(tl.int32, bitcast=True)
            ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
            key = ordered * 4294967296 + (4294967295 - rows)
            key = tl.where(keep, key, -9223372036854775807)
            if tl.max(key, 0) > tl.min(buf, 0):
                best = tl.topk(key, K_PAD)  # descending
                buf = tl.sort(tl.maximum(buf, best), 0)  # bitonic half-cleaner: the top K_PAD of both
        tl.store(OUT + (b * num_splits + split) * K_PAD + tl.arange(0, K_PAD), buf)


def fused_mol_topk_unsupported(device: torch.device | str, k: int) -> str | None:
    """None when the fused kernel can run top-``k`` on tensors of ``device``, else the reason it cannot."""
    if k > MAX_FUSED_K:
        return f"k={k} exceeds MAX_FUSED_K={MAX_FUSED_K}"
    device = torch.device(device)
    if device.type != "cuda" and not (device.type == "cpu" and triton_usable("cpu")):
        return f"device {device} is neither CUDA nor CPU under TRITON_INTERPRET=1"
    if not triton_usable(device):
        return "triton is not importable"
    return None


def block_diagonal_queries(query_components: Tensor, num_item_components: int) -> Tensor:
    """(B, P_Q, d_P) -> (B, P_X * d_P, P_Q * P_X) with column i*P_X + j = f_i placed in row block j."""
    batch, num_query, dim = query_components.shape
    out = query_components.new_zeros(batch, num_item_components, dim, num_query, num_item_components)
    for j in range(num_item_components):
        out[:, j, :, :, j] = query_components.transpose(1, 2)
    return out.reshape(batch, num_item_components * dim, num_query * num_item_components)


def decode_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Packed int64 keys -> (float32 scores, int64 positions); empty keys -> (-inf, -1)."""
    ordered = keys >> 32
    positions = 4294967295 - (keys & 0xFFFFFFFF)
    bits = torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF).to(torch.int32)
    scores = bits.view(torch.float32).clone()
    empty = keys <= EMPTY_KEY
    return scores.masked_fill(empty, -math.inf), positions.masked_fill(empty, -1)


def _pad2(x: Tensor, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
    out = torch.zeros(rows, cols, dtype=dtype, device=x.device)
    out[: x.shape[0], : x.shape[1]] = x.to(dtype)
    return out


def fused_mol_topk(
    query_components: Tensor,
    query_gate: Tensor,
    item_components: Tensor,
    item_gate: Tensor,
    *,
    qi_hidden_weight: Tensor,
    qi_hidden_bias: Tensor | None,
    qi_out_weight: Tensor,
    qi_out_bias: Tensor | None,
    temperature: float,
    k: int,
    exclude_positions: Tensor | None = None,
    block_x: int | None = None,
    num_splits: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact MoL top-k with the fused kernel ("glu_silu" gating, no dropout).

    Args:
        query_components: (B, P_Q, d_P) L2-normalised query components.
        query_gate: (B, P) query-only gating part.
        item_components: (X, P_X, d_P) L2-normalised item components; bf16 components run the matmuls in
            bf16 (fp32 accumulation), fp32 components in exact fp32 ("ieee").
        item_gate: (X, P) item-only gating part.
        qi_hidden_weight: (H, P) first Linear of the query-item gating part.
        qi_hidden_bias: (H,) its bias, or None.
        qi_out_weight: (P, H) second Linear.
        qi_out_bias: (P,) its bias, or None.
        temperature: tau dividing every component cosine.
        k: results per query (<= 256).
        exclude_positions: (B, H) corpus positions to drop (-1 = none).
        block_x: items per tile (power of two >= the padded k; default max(64, K_PAD)).
        num_splits: corpus splits per query (default: about 4 programs per SM on CUDA, 1 on CPU).

    Returns:
        (B, min(k, X)) float32 scores sorted descending and int64 corpus positions (empty: -inf, -1).
    """
    if triton is None:
        raise RuntimeError("fused_mol_topk needs triton")
    if k < 1 or k > MAX_FUSED_K:
        raise ValueError(f"fused_mol_topk supports 1 <= k <= {MAX_FUSED_K}, got {k}")
    num_items, num_item_comp, dim = item_components.shape
    batch, num_query_comp, _ = query_components.shape
    device = item_components.device
    pairs = num_query_comp * num_item_comp
    if tuple(qi_hidden_weight.shape[1:]) != (pairs,) or tuple(qi_out_weight.shape[:1]) != (pairs,):
        raise ValueError(
            f"gating weights {tuple(qi_hidden_weight.shape)} / {tuple(qi_out_weight.shape)} do not match "
            f"P = {num_query_comp} x {num_item_comp} pairs"
        )
    width = min(k, num_items)
    if num_items == 0 or batch == 0:
        return torch.empty(batch, 0, device=device), torch.empty(batch, 0, dtype=torch.int64, device=device)

    compute_dtype = torch.bfloat16 if item_components.dtype == torch.bfloat16 else torch.float32
    precision = None if compute_dtype == torch.bfloat16 else "ieee"  # bf16 operands: default dot
    hidden = qi_hidden_weight.shape[0]
    kd, kd_pad = num_item_comp * dim, _next_pow2(num_item_comp * dim)
    p_pad, h_pad = _next_pow2(pairs), _next_pow2(hidden)
    k_pad = _next_pow2(width)
    block = block_x or max(64, k_pad)
    if block < k_pad or block & (block - 1):
        raise ValueError(f"block_x must be a power of two >= {k_pad}, got {block}")

    items = item_components.reshape(num_items, kd).to(compute_dtype).contiguous()
    item_gate = item_gate.contiguous()
    fbd = block_diagonal_queries(query_components.float(), num_item_comp)
    fbd_pad = torch.zeros(batch, kd_pad, p_pad, dtype=compute_dtype, device=device)
    fbd_pad[:, :kd, :pairs] = fbd.to(compute_dtype)
    query_gate = _pad2(query_gate.float(), batch, p_pad, torch.float32)
    w1 = _pad2(qi_hidden_weight.T, p_pad, h_pad, compute_dtype)
    w2 = _pad2(qi_out_weight.T, h_pad, p_pad, compute_dtype)
    b1 = torch.zeros(h_pad, dtype=torch.float32, device=device)
    b2 = torch.zeros(p_pad, dtype=torch.float32, device=device)
    if qi_hidden_bias is not None:
        b1[:hidden] = qi_hidden_bias.float()
    if qi_out_bias is not None:
        b2[:pairs] = qi_out_bias.float()

    has_excl = exclude_positions is not None and exclude_positions.shape[1] > 0
    e_width = exclude_positions.shape[1] if has_excl else 1
    e_pad = _next_pow2(e_width, floor=2)
    excl = torch.full((batch, e_pad), -1, dtype=torch.int64, device=device)
    if has_excl:
        excl[:, :e_width] = exclude_positions

    if num_splits is None:
        if device.type == "cuda":
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            num_splits = max(1, min(triton.cdiv(num_items, block), (4 * sms + batch - 1) // batch))
        else:
            num_splits = 1
    items_per_split = triton.cdiv(triton.cdiv(num_items, num_splits), block) * block
    num_splits = triton.cdiv(num_items, items_per_split)
    out = torch.empty(batch, num_splits, k_pad, dtype=torch.int64, device=device)

    def _launch(stages: int) -> None:
        _mol_topk_kernel[(batch, num_splits)](
            items,
            item_gate,
            fbd_pad,
            query_gate,
            w1,
            b1,
            w2,
            b2,
            excl,
            out,
            num_items,
            items_per_split,
            num_splits,
            1.0 / temperature,
            items.stride(0),
            item_gate.stride(0),
            KD=kd,
            KD_PAD=kd_pad,
            P=pairs,
            P_PAD=p_pad,
            H_PAD=h_pad,
            E_PAD=e_pad,
            BLOCK_X=block,
            K_PAD=k_pad,
            HAS_EXCL=has_excl,
            PRECISION=precision,
            num_stages=stages,
        )

    # Software pipelining keeps `num_stages` item tiles in shared memory; wide tiles (large P_X * d_P,
    # k > 64) overflow the 227 KB of an H100/H200 at the default 3 stages, so fall back to fewer.
    for stages in (3, 2, 1):
        try:
            _launch(stages)
            break
        except OutOfResources:
            if stages == 1:
                raise
    keys = torch.topk(out.view(batch, -1), width, dim=1).values
    return decode_keys(keys)
