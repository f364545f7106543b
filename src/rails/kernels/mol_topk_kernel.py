"""The ``@triton.jit`` part of the blocked exact MoL top-k (design and cost model: ``mol_topk_triton``).

One program owns ``BQ`` queries and one contiguous split of the corpus and walks the split in tiles of
``BX`` items. Per tile, all ``BQ * BX`` (query, item) pairs are scored at once:

1. pair logits without wasted multiply-adds: one matmul ``G (BX*PXP, d) @ F^T (d, BQ*PQP)`` (item
   component rows x query component columns), then a register permute (x, j, q, i) -> (q, x, i, j) that
   lays the pairs out as rows of ``(BQ*BX, P)`` with pair index ``p = i*PXP + j``;
2. an optional exact prune: the score is a convex combination of the pair logits, so no pair whose best
   logit is below its query's current k-th best key can enter the top-k; a tile where that holds for
   every pair skips steps 3-4;
3. the gating MLP on tensor cores with the pairs in M: ``SiLU(L W1 + b1) W2 + b2`` ((BQ*BX, P) @ (P, H) and
   (BQ*BX, H) @ (H, P)), ``s = SiLU(q_gate * i_gate + qi)``, ``pi = softmax_P(s)``, ``phi = sum_p pi_p L_p``;
   with ``H_CHUNK < H_PAD`` the hidden layer is computed ``H_CHUNK`` units at a time and accumulated into the
   second matmul, so the live (BQ*BX, hidden) tile shrinks (fewer registers per thread, more programs per SM)
   at the cost of reading W1 / W2 chunks from cache per tile instead of keeping them in registers;
4. a running top-``K_PAD`` per query (``(BQ, K_PAD)`` packed int64 keys, ascending): a tile is merged only
   when one of its keys beats its query's current k-th best key (one compare per pair); history exclusion
   is applied only to tiles that are merged. With ``MERGE_TILES`` > 1 a merged tile's keys are only parked in
   one of ``SLOTS = min(MERGE_TILES, K_PAD // BX)`` pending slots (a select, no sort), and the pending keys are
   merged into the top-``K_PAD`` once every slot is full (and at the end): one sort per ``SLOTS`` merged tiles
   instead of one per tile, the threshold then lagging by at most that many tiles (still a lower bound of the
   k-th best, so nothing of the top-k is dropped). With ``EMIT`` the thresholds are fixed per query (``THR``,
   a lower bound of the k-th best key from a sample pass) and the keys above them are appended to the
   query's row of ``CAND`` (slots from an atomic counter per query, order within a tile by a prefix sum):
   no sort on chip; the host takes the top k of the few candidates.

With ``STEP_TILES = 2`` a loop step scores two tiles as independent chains (both tiles' logits, then both
gatings) and treats their ``2 * BX`` keys as one tile of the steps above: the search is latency-bound (one
8-warp program per SM at 255 registers), and a second chain gives the scheduler work while the first waits.
Timed on an H200 it did not pay (4x32x8: 1.03x at 1M items, 0.98x at 10M; docs/benchmarks.md), so it is an
explicit launch option, not among the autotuner's configs.

Keys pack the score's order-preserving int32 bits high and ``2^32 - 1 - position`` low, so key order is
the package's order (score descending, position ascending on ties). Padded pairs (``i >= P_Q`` or
``j >= P_X``), hidden units, components and queries carry zero weights / -inf gates / empty keys.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Module-level values read inside @triton.jit functions must be tl.constexpr: the compiler refuses any other
# global (the interpreter does not, so tests/test_kernel_globals.py checks this on CPU).
EMPTY = tl.constexpr(-9223372036854775807)  # below every packed score (== mol_topk_triton.EMPTY_KEY)

# SiLU(x) = x * (0.5 + 0.5 * tanh(x / 2)): one MUFU op (tanh) instead of two (exp, reciprocal).
_TANH_F32 = tl.constexpr("tanh.approx.f32 $0, $1;")
# The same on two packed bf16 values per 32-bit register (sm_90: mul.bf16x2, tanh.approx.bf16x2).
_SILU_BF16X2 = tl.constexpr(
    "{ .reg .b32 c, t; mov.b32 c, 0x3F003F00; mul.rn.bf16x2 t, $1, c; tanh.approx.bf16x2 t, t; "
    "fma.rn.bf16x2 t, t, c, c; mul.rn.bf16x2 $0, $1, t; }"
)


@triton.jit
def _silu(x, FAST: tl.constexpr):
    """SiLU in float32; ``FAST`` uses the hardware tanh approximation (CUDA only, not the interpreter)."""
    if FAST:
        t = tl.inline_asm_elementwise(_TANH_F32, "=r,r", [x * 0.5], dtype=tl.float32, is_pure=True, pack=1)
        y = x * (0.5 + 0.5 * t)
    else:
        y = x * tl.sigmoid(x)
    return y


@triton.jit
def _silu_bf16x2(x):
    """SiLU of a bf16 tensor, two values per instruction (sm_90 and newer)."""
    return tl.inline_asm_elementwise(_SILU_BF16X2, "=r,r", [x], dtype=tl.bfloat16, is_pure=True, pack=2)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` with fp32 accumulation; ``UPCAST`` multiplies bf16 operands as exact fp32 (interpreter)."""
    if UPCAST:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b, input_precision=PRECISION)
    return c


@triton.jit
def _gating_mlp_chunked(
    pairs,
    W1,
    B1,
    W2,
    p,
    P_PAD: tl.constexpr,
    H_PAD: tl.constexpr,
    H_CHUNK: tl.constexpr,
    M: tl.constexpr,
    FAST_MATH: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """``SiLU(L W1 + b1) W2`` (no b2) ``H_CHUNK`` hidden units at a time: (M, P_PAD) pair logits -> (M, P_PAD)."""
    lhs = pairs.to(W1.dtype.element_ty)
    qi = tl.zeros((M, P_PAD), dtype=tl.float32)
    for h0 in tl.static_range(0, H_PAD, H_CHUNK):
        hc = h0 + tl.arange(0, H_CHUNK)
        w1 = tl.load(W1 + p[:, None] * H_PAD + hc[None, :])  # (P_PAD, H_CHUNK)
        hidden = _dot(lhs, w1, PRECISION, UPCAST) + tl.load(B1 + hc)[None, :]
        if FAST_MATH == 2:
            hidden = _silu_bf16x2(hidden.to(tl.bfloat16))
        else:
            hidden = _silu(hidden, FAST_MATH == 1).to(W2.dtype.element_ty)
        w2 = tl.load(W2 + hc[:, None] * P_PAD + p[None, :])  # (H_CHUNK, P_PAD)
        qi += _dot(hidden, w2, PRECISION, UPCAST)
    return qi


@triton.jit
def _pack_keys(scores, positions, keep):
    """float32 scores + int32 positions -> int64 keys ordered by (score desc, position asc); else EMPTY."""
    bits = scores.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
    keys = ordered * 4294967296 + (4294967295 - positions.to(tl.int64))
    return tl.where(keep, keys, EMPTY)


@triton.jit
def _merge(buf, keys, BQ: tl.constexpr, BX: tl.constexpr, K_PAD: tl.constexpr):
    """Top ``K_PAD`` per row of ``buf`` (BQ, K_PAD) ascending and ``keys`` (BQ, BX); returns it ascending.

    Only the ``min(BX, K_PAD)`` smallest entries of ``buf`` can be evicted; the elementwise max of those
    (ascending) and the tile's best (descending) is the top of their union (a bitonic half-cleaner).
    """
    if BX >= K_PAD:
        merged = tl.maximum(buf, tl.topk(keys, K_PAD, dim=1))
    else:
        best = tl.sort(keys, dim=1, descending=True)  # (BQ, BX)
        chunks = tl.reshape(buf, (BQ, K_PAD // BX, BX))
        first = (tl.arange(0, K_PAD // BX) == 0)[None, :, None]
        merged = tl.reshape(tl.maximum(chunks, tl.where(first, best[:, None, :], EMPTY)), (BQ, K_PAD))
    return tl.sort(merged, dim=1)


@triton.jit
def _emit(keys, hit, q, q_ok, COUNT, CAND, capacity):
    """Append the (BQ, BX) ``keys`` where ``hit`` to row q of CAND (capacity slots; COUNT counts, past it too)."""
    hit_i = hit.to(tl.int32)
    found = tl.sum(hit_i, 1)  # (BQ,)
    base = tl.atomic_add(COUNT + q, found, mask=q_ok & (found > 0))
    slot = base[:, None] + tl.cumsum(hit_i, 1) - hit_i
    ok = hit & q_ok[:, None] & (slot < capacity)
    tl.store(CAND + q.to(tl.int64)[:, None] * capacity + slot, keys, mask=ok)


@triton.jit
def _exclude(keys, EXCL, q, x, num_excl, BQ: tl.constexpr, BX: tl.constexpr, E_BLOCK: tl.constexpr):
    """Empty the keys of (query q, item x) pairs listed in EXCL (rows of ``num_excl`` int32 positions)."""
    hit = tl.zeros((BQ, BX), dtype=tl.int32)
    e = tl.arange(0, E_BLOCK)
    for e0 in range(0, num_excl, E_BLOCK):
        cols = e0 + e
        ex = tl.load(
            EXCL + q.to(tl.int64)[:, None] * num_excl + cols[None, :], mask=cols[None, :] < num_excl, other=-1
        )
        hit += tl.sum((ex[:, None, :] == x[None, :, None]).to(tl.int32), 2)
    return tl.where(hit > 0, EMPTY, keys)


@triton.jit
def _tile_pairs(
    G, IG, ft, tile, end, g_offsets, ig_offsets, r_item, r_comp, c, xl, pair_ok, inv_tau, stride_g, stride_ig,
    PQ: tl.constexpr, PX: tl.constexpr, D: tl.constexpr, PQP: tl.constexpr, PXP: tl.constexpr,
    D_PAD: tl.constexpr, BQ: tl.constexpr, BX: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ABLATE: tl.constexpr,
):  # fmt: skip
    """Items ``tile .. tile + BX - 1`` (those < ``end``): (BQ*BX, P_PAD) pair logits in the padded pair layout,
    (BX, P_PAD) item gate parts, (BX,) positions and (BX,) validity."""
    P_PAD: tl.constexpr = PQP * PXP
    g_mask = (tile + r_item < end)[:, None]
    if PXP != PX:
        g_mask = g_mask & (r_comp < PX)[:, None]
    if D_PAD != D:
        g_mask = g_mask & (c < D)[None, :]
    g_ptr = (G + tl.cast(tile, tl.int64) * stride_g) + g_offsets
    g = tl.load(g_ptr, mask=g_mask, other=0.0)  # (BX*PXP, D_PAD)
    x = tile + xl
    x_ok = x < end
    ig_mask = x_ok[:, None]
    if P_PAD != PQ * PX:
        ig_mask = ig_mask & pair_ok[None, :]
    ig = tl.load((IG + tl.cast(tile, tl.int64) * stride_ig) + ig_offsets, mask=ig_mask, other=0.0)
    logits = _dot(g, ft, PRECISION, UPCAST) * inv_tau  # (BX*PXP, BQ*PQP) fp32
    if ABLATE == 3:  # the same values in the wrong pair order: what the permute costs
        pairs = tl.reshape(logits, (BQ * BX, P_PAD))
    else:
        pairs = tl.reshape(tl.permute(tl.reshape(logits, (BX, PXP, BQ, PQP)), (2, 0, 3, 1)), (BQ * BX, P_PAD))
    return pairs, ig, x, x_ok


@triton.jit
def _tile_bound_hit(pairs, keep, thr, pair_ok, BQ: tl.constexpr, BX: tl.constexpr, P_PAD: tl.constexpr):
    """Whether a pair of the tile may reach its query's threshold: phi <= max_p L_p (+ float32 rounding)."""
    pairs3 = tl.reshape(pairs, (BQ, BX, P_PAD))
    best = tl.max(tl.where(pair_ok[None, None, :], pairs3, -float("inf")), 2)
    bound = best + 1e-4 * tl.max(tl.abs(pairs3), 2) + 1e-30
    bound_keys = _pack_keys(bound, tl.zeros((BQ, BX), dtype=tl.int32), keep)
    return tl.sum((bound_keys > thr[:, None]).to(tl.int32)) > 0


@triton.jit
def _tile_scores(
    pairs, ig, qg, w1, b1, w2, b2, W1, B1, W2, p, pair_ok,
    P_PAD: tl.constexpr, H_PAD: tl.constexpr, H_CHUNK: tl.constexpr, BQ: tl.constexpr, BX: tl.constexpr,
    FAST_MATH: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, ABLATE: tl.constexpr,
):  # fmt: skip
    """The (BQ, BX) MoL scores of a tile's pairs: gating MLP, gate, softmax over pairs, mixture of logits."""
    pairs3 = tl.reshape(pairs, (BQ, BX, P_PAD))
    if ABLATE == 1:  # the best logit instead of the gated mixture: what the gating MLP costs
        phi = tl.max(tl.where(pair_ok[None, None, :], pairs3, -float("inf")), 2) + tl.sum(ig, 1)[None, :]
    else:
        if H_CHUNK == H_PAD:
            hidden = _dot(pairs.to(w1.dtype), w1, PRECISION, UPCAST) + b1[None, :]
            if FAST_MATH == 2:
                hidden = _silu_bf16x2(hidden.to(tl.bfloat16))
            else:
                hidden = _silu(hidden, FAST_MATH == 1).to(w2.dtype)
            qi = _dot(hidden, w2, PRECISION, UPCAST) + b2[None, :]
        else:
            qi = (
                _gating_mlp_chunked(
                    pairs, W1, B1, W2, p, P_PAD, H_PAD, H_CHUNK, BQ * BX, FAST_MATH, PRECISION, UPCAST
                )
                + b2[None, :]
            )
        gate = qg[:, None, :] * ig.to(tl.float32)[None, :, :] + tl.reshape(qi, (BQ, BX, P_PAD))
        gate = _silu(gate, FAST_MATH >= 1)
        gate = tl.where(pair_ok[None, None, :], gate, -float("inf"))
        weights = tl.exp(gate - tl.max(gate, 2)[:, :, None])
        phi = tl.sum(weights * pairs3, 2) / tl.sum(weights, 2)
    return phi


@triton.jit
def mol_topk_block_kernel(
    G,  # (X, P_X * d) item components, row stride stride_g
    IG,  # (X, P_X * P_Q) item gate part, row stride stride_ig
    F,  # (Q_ROWS, PQP, D_PAD) query components (zero-padded), compute dtype
    QG,  # (Q_ROWS, P_PAD) float32 query gate part in the padded pair layout
    W1,  # (P_PAD, H_PAD) first gating Linear, transposed, padded pair layout
    B1,  # (H_PAD,) float32
    W2,  # (H_PAD, P_PAD) second gating Linear, transposed
    B2,  # (P_PAD,) float32
    EXCL,  # (Q_ROWS, num_excl) int32 excluded positions, -1 = none
    OUT,  # (num_queries, num_splits, K_PAD) int64 keys (not written with EMIT)
    THR,  # (Q_ROWS,) int64 fixed thresholds (EMIT only): keys above them are candidates
    COUNT,  # (Q_ROWS,) int32 candidates found per query (EMIT only; zeroed by the host)
    CAND,  # (Q_ROWS, capacity) int64 candidate keys (EMIT only)
    num_items,
    num_queries,
    items_per_split,
    num_splits,
    num_excl,
    k,  # results wanted (<= K_PAD): the filter threshold is each query's k-th best key
    capacity,  # candidate slots per query (EMIT)
    inv_tau,
    stride_g,
    stride_ig,
    batch_bucket,  # autotuning key only
    PQ: tl.constexpr,
    PX: tl.constexpr,
    D: tl.constexpr,
    PQP: tl.constexpr,
    PXP: tl.constexpr,
    D_PAD: tl.constexpr,
    H_PAD: tl.constexpr,
    H_CHUNK: tl.constexpr,  # hidden units per step of the gating MLP (H_PAD: all at once, weights in registers)
    K_PAD: tl.constexpr,
    E_BLOCK: tl.constexpr,
    HAS_EXCL: tl.constexpr,
    PRUNE: tl.constexpr,
    FAST_MATH: tl.constexpr,  # 0 exact, 1 tanh.approx.f32 SiLU, 2 + bf16x2 SiLU of the hidden layer
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # bf16 dot operands multiplied as fp32 (the CPU interpreter has no bf16 dot)
    ABLATE: tl.constexpr,  # timing diagnostics only (wrong results): 1 no gating MLP, 2 no merge, 3 no permute
    EMIT: tl.constexpr,  # fixed thresholds THR and candidate emission instead of the running top-k
    MERGE_TILES: tl.constexpr,  # merged tiles parked per sort of the running top-k (1: every tile sorted in)
    STEP_TILES: tl.constexpr,  # tiles scored per loop step (2: two independent chains for the scheduler)
    BQ: tl.constexpr,
    BX: tl.constexpr,
):
    P_PAD: tl.constexpr = PQP * PXP
    qb = tl.program_id(0)
    split = tl.program_id(1)
    q = qb * BQ + tl.arange(0, BQ)
    q_ok = q < num_queries
    c = tl.arange(0, D_PAD)
    n = tl.arange(0, BQ * PQP)
    ft = tl.load(F + (qb * BQ * PQP + n).to(tl.int64)[None, :] * D_PAD + c[:, None])  # (D_PAD, BQ*PQP)
    p = tl.arange(0, P_PAD)
    if H_CHUNK == H_PAD:
        h = tl.arange(0, H_PAD)
        w1 = tl.load(W1 + p[:, None] * H_PAD + h[None, :])
        w2 = tl.load(W2 + h[:, None] * P_PAD + p[None, :])
        b1 = tl.load(B1 + h)
    else:  # read in steps from W1 / B1 / W2 by _gating_mlp_chunked
        w1, b1, w2 = 0, 0, 0
    b2 = tl.load(B2 + p)
    qg = tl.load(QG + q.to(tl.int64)[:, None] * P_PAD + p[None, :])  # (BQ, P_PAD)
    pi = p // PXP
    pj = p % PXP
    pair_ok = (pi < PQ) & (pj < PX)
    ig_col = pi * PX + pj
    r = tl.arange(0, BX * PXP)
    r_item = r // PXP
    r_comp = r % PXP
    xl = tl.arange(0, BX)
    # the tile's element offsets from its first item, computed once: the loop adds one scalar per tile (int32: the
    # host passes contiguous rows, so BX x row width stays far below 2^31)
    g_offsets = (r_item * stride_g + r_comp * D)[:, None] + c[None, :]  # (BX*PXP, D_PAD)
    ig_offsets = (xl * stride_ig)[:, None] + ig_col[None, :]  # (BX, P_PAD)

    start = split * items_per_split
    end = tl.minimum(start + items_per_split, num_items)
    buf = tl.full((BQ, K_PAD), EMPTY, tl.int64)
    if EMIT:
        thr = tl.load(THR + q)
    else:
        thr = tl.full((BQ,), EMPTY, tl.int64)
    kth = (tl.arange(0, K_PAD) == K_PAD - k)[None, :]  # the k-th largest of an ascending row
    BXS: tl.constexpr = BX * STEP_TILES  # keys per loop step
    # parked steps per sort: min(MERGE_TILES, K_PAD // BXS), at least 1 (the builtin max / min make tensors)
    SLOTS: tl.constexpr = MERGE_TILES if MERGE_TILES * BXS <= K_PAD else (K_PAD // BXS if BXS <= K_PAD else 1)
    pending = tl.full((BQ, SLOTS, BXS), EMPTY, tl.int64)
    slot = tl.arange(0, SLOTS)[None, :, None]
    parked = qb * 0  # steps parked since the last sort (int32)
    for tile in range(start, end, BXS):
        # the step's tiles scored as independent chains (logits of both, then the gating of both): with
        # STEP_TILES = 2 one tile's matmuls can issue while the other's gating waits
        pairs, ig, x, x_ok = _tile_pairs(
            G, IG, ft, tile, end, g_offsets, ig_offsets, r_item, r_comp, c, xl, pair_ok, inv_tau, stride_g,
            stride_ig, PQ, PX, D, PQP, PXP, D_PAD, BQ, BX, PRECISION, UPCAST, ABLATE,
        )  # fmt: skip
        if STEP_TILES == 2:
            pairs_b, ig_b, x_b, x_ok_b = _tile_pairs(
                G, IG, ft, tile + BX, end, g_offsets, ig_offsets, r_item, r_comp, c, xl, pair_ok, inv_tau,
                stride_g, stride_ig, PQ, PX, D, PQP, PXP, D_PAD, BQ, BX, PRECISION, UPCAST, ABLATE,
            )  # fmt: skip
        step_x, step_x_ok = x, x_ok  # (BXS,) the step's positions and their validity
        if STEP_TILES == 2:
            step_x = tl.reshape(tl.join(x, x_b), (BXS,))
            step_x_ok = tl.reshape(tl.join(x_ok, x_ok_b), (BXS,))
        run = True
        if PRUNE:
            run = _tile_bound_hit(pairs, q_ok[:, None] & x_ok[None, :], thr, pair_ok, BQ, BX, P_PAD)
            if STEP_TILES == 2:
                run_b = _tile_bound_hit(pairs_b, q_ok[:, None] & x_ok_b[None, :], thr, pair_ok, BQ, BX, P_PAD)
                run = run | run_b
        if run:
            phi = _tile_scores(
                pairs, ig, qg, w1, b1, w2, b2, W1, B1, W2, p, pair_ok, P_PAD, H_PAD, H_CHUNK, BQ, BX, FAST_MATH,
                PRECISION, UPCAST, ABLATE,
            )  # fmt: skip
            if STEP_TILES == 2:
                phi_b = _tile_scores(
                    pairs_b, ig_b, qg, w1, b1, w2, b2, W1, B1, W2, p, pair_ok, P_PAD, H_PAD, H_CHUNK, BQ, BX,
                    FAST_MATH, PRECISION, UPCAST, ABLATE,
                )  # fmt: skip
                # interleaved as step_x (key order does not matter to the merge)
                phi = tl.reshape(tl.join(phi, phi_b), (BQ, BXS))
            keys = _pack_keys(phi, step_x[None, :], q_ok[:, None] & step_x_ok[None, :])
            if ABLATE == 2:  # keys kept live without the merge: what the top-k merge costs
                buf = tl.maximum(buf, tl.max(keys, 1)[:, None])
            elif EMIT:
                hit = keys > thr[:, None]
                if tl.sum(hit.to(tl.int32)) > 0:
                    if HAS_EXCL:
                        keys = _exclude(keys, EXCL, q, step_x, num_excl, BQ, BXS, E_BLOCK)
                        hit = keys > thr[:, None]
                    _emit(keys, hit, q, q_ok, COUNT, CAND, capacity)
            elif tl.sum((keys > thr[:, None]).to(tl.int32)) > 0:
                if HAS_EXCL:
                    keys = _exclude(keys, EXCL, q, step_x, num_excl, BQ, BXS, E_BLOCK)
                if SLOTS > 1:
                    pending = tl.where(slot == parked, keys[:, None, :], pending)
                    parked += 1
                    if parked == SLOTS:
                        buf = _merge(buf, tl.reshape(pending, (BQ, SLOTS * BXS)), BQ, SLOTS * BXS, K_PAD)
                        thr = tl.sum(tl.where(kth, buf, 0), 1)
                        pending = tl.full((BQ, SLOTS, BXS), EMPTY, tl.int64)
                        parked = qb * 0
                else:
                    buf = _merge(buf, keys, BQ, BXS, K_PAD)
                    thr = tl.sum(tl.where(kth, buf, 0), 1)
    if SLOTS > 1 and not EMIT:
        buf = _merge(buf, tl.reshape(pending, (BQ, SLOTS * BXS)), BQ, SLOTS * BXS, K_PAD)
    if not EMIT:
        out = OUT + (q.to(tl.int64)[:, None] * num_splits + split) * K_PAD + tl.arange(0, K_PAD)[None, :]
        tl.store(out, buf, mask=q_ok[:, None])
