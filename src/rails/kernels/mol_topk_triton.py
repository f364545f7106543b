"""Fused exact Mixture-of-Logits top-k (Triton): one pass over the item state per block of queries.

Design (kernel: :mod:`rails.kernels.mol_topk_kernel`). A program owns ``BQ`` queries and one contiguous
split of the corpus; it loads each tile of ``BX`` items once and scores all ``BQ * BX`` (query, item) pairs
with it: the pair logits as one exact matmul (no block-diagonal padding) permuted on chip into pair rows,
the gating MLP as two tensor-core matmuls with the pairs in M, the softmax mixture, and a running top-k
per query in registers that is touched only when a tile holds a key above the query's current k-th best
(one compare per pair). An exact prune skips the gating MLP of tiles in which no pair's best logit can
reach that threshold (the score is a convex combination of the logits). Query blocks of one split run side
by side (grid axis 0), so the item tiles they share come from L2 and HBM streams the corpus about once.
The host pads the query side (components, gate, gating weights in the padded pair layout
``p = i * PXP + j``), launches one kernel and takes the top k of the (B, splits * K_PAD) keys: no
per-tile synchronisation and no (B, X) scores in memory.

Block shapes per regime (``triton.autotune`` on CUDA keyed on B, P and d; the heuristic below otherwise):
B <= 8 uses the fewest queries a tensor-core tile allows (BQ * P_Q >= 16) and many corpus splits, so the
launch fills the GPU and streams the corpus at HBM speed; larger B uses BQ = 8-16 and fewer splits, so
each item tile is reused by 8-16 queries. Splits: about 4 programs per SM at a nominal 8 queries per
block, >= 1024 items each (``num_splits`` overrides; fewer, longer splits mean fewer top-k merges).

Cost (8x4x64, H = 128, per (query, item) pair). Tensor cores: 2 P d (logits) + 4 P H (gating) = 20.5 KFLOP,
the roofline floor's FLOPs (0.87 ms for B = 32 x 1M items at 755 TFLOP/s). Special-function unit: SiLU as
``x (0.5 + 0.5 tanh(x / 2))`` with hardware tanh, bf16x2 for the hidden layer (``FAST_MATH = 2``): 128 + 32 + 32
MUFU ops per pair (~1.5 ms at 1M). Issue: 50-58 warp instructions per pair outside merges (``scripts/kernel_sass.py``,
~1.7 ms at 1M). Measured (H200, B = 32): 7-12x the floor, the issue rate at 22-31 %: at 241-255 registers one 8-warp
program runs per SM and the tile's matmul -> SiLU -> matmul -> softmax chain stalls it (docs/benchmarks.md).
``merge_tiles`` parks merged tiles and sorts several in at once; ``hidden_chunk`` and ``maxnreg`` (explicit
launches only: a 128-register cap lost at every shape, round 23) trade registers for more programs per SM
(``scripts/kernel_registers.py``: registers without a GPU); ``step_tiles`` scores two tiles per loop step.

Under the Triton CPU interpreter (tests) bf16 dot operands are multiplied as fp32 (``UPCAST``; the
interpreter's bf16 dot is wrong) with the same bf16 roundings, and SiLU is exact (no inline PTX there).

Results follow the package's order: score descending, position ascending on ties. Limits: k <= 256
(``MAX_FUSED_K``), "glu_silu" gating without dropout, fewer than 2^31 items. The kernel takes tensors and
numbers only; :mod:`rails.retrieval.indexes.exact` feeds it a MoL head's states and ``head.mixing()``.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from torch import Tensor

from rails.kernels import triton_usable
from rails.kernels.mol_topk_blocks import (  # noqa: F401 - re-exported: the block choices of this kernel
    MAX_PAIRS,
    QUERY_ALIGN,
    SPLIT_ALIGN,
    TUNE_KEY,
    block_valid,
    cdiv,
    default_blocks,
    default_splits,
    items_per_split,
    next_pow2,
    prune_configs,
    tune_configs,
)

log = logging.getLogger(__name__)
MAX_FUSED_K = 256
EMPTY_KEY = -(2**63) + 1  # below every packed finite or infinite score

try:  # Triton is optional: the module imports without it, the kernel then is unavailable.
    import triton
    from triton.runtime.errors import OutOfResources

    from rails.kernels.mol_topk_kernel import mol_topk_block_kernel
except ImportError:  # pragma: no cover - exercised only without triton
    triton = None
    mol_topk_block_kernel = None
    OutOfResources = RuntimeError  # noqa: N806

_tuned_kernel = None
_fast_math_failed = False
LAST_COMPILED: dict = {}
"""Registers, spills and (BQ, BX, warps, stages) of the last untuned launch (diagnostics)."""


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


def decode_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Packed int64 keys -> (float32 scores, int64 positions); empty keys -> (-inf, -1)."""
    ordered = keys >> 32
    positions = 4294967295 - (keys & 0xFFFFFFFF)
    bits = torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF).to(torch.int32)
    scores = bits.view(torch.float32).clone()
    empty = keys <= EMPTY_KEY
    return scores.masked_fill(empty, -math.inf), positions.masked_fill(empty, -1)


def pair_padding(num_query: int, num_item: int) -> tuple[int, int]:
    """(PQP, PXP): power-of-two component counts with PQP * PXP >= 16 (the smallest tensor-core K)."""
    pqp = next_pow2(num_query, floor=1)
    return pqp, max(next_pow2(num_item, floor=1), 16 // pqp)


def _tuned():
    global _tuned_kernel
    if _tuned_kernel is None:
        configs = tune_configs(triton.Config)
        _tuned_kernel = triton.autotune(  # COUNT is zeroed before each timed run (the atomics add to it)
            configs,
            key=list(TUNE_KEY),
            prune_configs_by={"early_config_prune": prune_configs},
            reset_to_zero=["COUNT"],
        )(mol_topk_block_kernel)
    return _tuned_kernel


def tuned_config() -> Any:
    """The autotuner's last chosen ``triton.Config`` (BQ, BX, warps, stages), or None before any tuned call."""
    return getattr(_tuned_kernel, "best_config", None)


def _padded_pairs(
    values: Tensor, pq: int, px: int, pqp: int, pxp: int, rows: int, dtype: torch.dtype
) -> Tensor:
    """(R, P_Q * P_X) pair-major values -> (rows, PQP * PXP) in the padded pair layout, zeros elsewhere."""
    out = torch.zeros(rows, pqp, pxp, dtype=dtype, device=values.device)
    out[: values.shape[0], :pq, :px] = values.reshape(-1, pq, px).to(dtype)
    return out.reshape(rows, pqp * pxp)


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
    block_q: int | None = None,
    num_warps: int | None = None,
    hidden_chunk: int | None = None,
    tune: bool | None = None,
    prune: bool = True,
    fast_math: bool | None = None,
    ablate: int = 0,
    thresholds: Tensor | None = None,
    capacity: int = 0,
    merge_tiles: int = 16,
    maxnreg: int | None = None,
    step_tiles: int = 1,
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
        exclude_positions: (B, E) corpus positions to drop (-1 = none).
        block_x: items per tile (BX, a power of two; None: autotuned / per-regime default).
        num_splits: corpus splits (None: about 4 programs per SM on CUDA, 1 on CPU).
        block_q: queries per program (BQ, a power of two; None: autotuned / per-regime default).
        num_warps: warps per program of an untuned launch (None: the per-regime default).
        hidden_chunk: gating hidden units computed per step (a power of two >= 16; None: all at once, with the
            gating weights held in registers).
        tune: autotune (BQ, BX, warps, stages) per (B bucket, shape); default: on CUDA when neither block
            size is given.
        prune: skip the gating of tiles whose pair logits cannot reach the current k-th best (exact).
        fast_math: hardware tanh SiLU (bf16 on CUDA only; default there). Falls back to exact math with a
            warning if it does not compile.
        ablate: timing diagnostics (``scripts/profile_fused_exact.py``), wrong results: 1 skips the gating
            MLP, 2 the top-k merge, 3 the pair permute; 0 (default) is the search.
        thresholds: (B,) int64 packed keys below every key of the true top-k (after exclusion), e.g. from
            :func:`rails.kernels.mol_topk_two_pass.sample_thresholds`: the kernel then appends the keys above
            them to ``capacity`` slots per query instead of keeping a running top-k, and the top k of those
            is the result. A query with more candidates than slots is searched again without thresholds
            (logged). None (default): the running top-k.
        capacity: candidate slots per query with ``thresholds``.
        merge_tiles: the running top-k parks the tiles it merges and sorts them in ``min(merge_tiles, K_PAD //
            BX)`` at a time (one sort per that many tiles; 16, the default: 1.38x at 1M items, H200, round 22).
        maxnreg: registers per thread of an untuned launch (None: ptxas' choice; fewer: more programs per SM, spills).
        step_tiles: tiles scored per loop step as independent chains (1 or 2; 2: a second chain to hide
            latency, 0.98-1.03x at 4x32x8 on an H200: not tuned).

    Returns:
        (B, min(k, X)) float32 scores sorted descending and int64 corpus positions (empty: -inf, -1).
    """
    global _fast_math_failed
    if triton is None:
        raise RuntimeError("fused_mol_topk needs triton")
    if k < 1 or k > MAX_FUSED_K:
        raise ValueError(f"fused_mol_topk supports 1 <= k <= {MAX_FUSED_K}, got {k}")
    num_items, px, dim = item_components.shape
    batch, pq, _ = query_components.shape
    device = item_components.device
    pairs = pq * px
    if tuple(qi_hidden_weight.shape[1:]) != (pairs,) or tuple(qi_out_weight.shape[:1]) != (pairs,):
        raise ValueError(
            f"gating weights {tuple(qi_hidden_weight.shape)} / {tuple(qi_out_weight.shape)} do not match "
            f"P = {pq} x {px} pairs"
        )
    if merge_tiles < 1 or merge_tiles & (merge_tiles - 1):
        raise ValueError(f"fused_mol_topk merge_tiles must be a power of two >= 1, got {merge_tiles}")
    if step_tiles not in (1, 2):
        raise ValueError(f"fused_mol_topk step_tiles must be 1 or 2, got {step_tiles}")
    if num_items >= 2**31:
        raise ValueError(f"fused_mol_topk supports fewer than 2^31 items, got {num_items}")
    width = min(k, num_items)
    if num_items == 0 or batch == 0:
        return torch.empty(batch, 0, device=device), torch.empty(batch, 0, dtype=torch.int64, device=device)

    bf16 = item_components.dtype == torch.bfloat16
    compute_dtype = torch.bfloat16 if bf16 else torch.float32
    hidden = qi_hidden_weight.shape[0]
    pqp, pxp = pair_padding(pq, px)
    d_pad, h_pad, k_pad = next_pow2(dim), next_pow2(hidden), next_pow2(width)
    h_chunk = min(hidden_chunk or h_pad, h_pad)
    if h_chunk < 16 or h_chunk & (h_chunk - 1):
        raise ValueError(f"fused_mol_topk hidden_chunk must be a power of two >= 16, got {hidden_chunk}")
    for name, value in (("block_x", block_x), ("block_q", block_q), ("num_warps", num_warps)):
        if value is not None and (value < 1 or value & (value - 1)):
            raise ValueError(f"fused_mol_topk {name} must be a power of two, got {value}")
    bq, bx, warps, stages = default_blocks(batch, pqp, pxp, block_x)
    bq, warps = block_q or bq, num_warps or warps
    if not block_valid(bq, bx, pqp, pxp, k_pad):
        raise ValueError(
            f"fused_mol_topk block_q={bq} x block_x={bx} needs block_q * {pqp} >= 16, block_x * {pxp} >= 16, "
            f"16 <= block_q * block_x <= {MAX_PAIRS} and block_x <= {max(k_pad, 128)}"
        )
    cuda = device.type == "cuda"
    if tune is None:
        tune = cuda and block_x is None and block_q is None
    if fast_math is None:
        fast_math = cuda and bf16 and not _fast_math_failed
    fast = 0
    if fast_math and cuda and bf16:
        fast = 2 if torch.cuda.get_device_capability(device) >= (9, 0) else 1

    items = item_components.reshape(num_items, px * dim).to(compute_dtype).contiguous()
    item_gate = item_gate.contiguous()
    rows = cdiv(batch, QUERY_ALIGN) * QUERY_ALIGN
    queries = torch.zeros(rows, pqp, d_pad, dtype=compute_dtype, device=device)
    queries[:batch, :pq, :dim] = query_components.to(compute_dtype)
    query_gate = _padded_pairs(query_gate.float(), pq, px, pqp, pxp, rows, torch.float32)
    w1 = _padded_pairs(qi_hidden_weight.float(), pq, px, pqp, pxp, h_pad, compute_dtype).T.contiguous()
    w2 = _padded_pairs(qi_out_weight.T.float(), pq, px, pqp, pxp, h_pad, compute_dtype).contiguous()
    b1 = torch.zeros(h_pad, dtype=torch.float32, device=device)
    if qi_hidden_bias is not None:
        b1[:hidden] = qi_hidden_bias.float()
    b2 = (
        torch.zeros(1, pairs, device=device) if qi_out_bias is None else qi_out_bias.float().reshape(1, pairs)
    )
    b2 = _padded_pairs(b2, pq, px, pqp, pxp, 1, torch.float32).reshape(-1)

    has_excl = exclude_positions is not None and exclude_positions.shape[1] > 0
    num_excl = exclude_positions.shape[1] if has_excl else 1
    excl = torch.full((rows, num_excl), -1, dtype=torch.int32, device=device)
    if has_excl:
        excl[:batch] = exclude_positions.to(torch.int32)

    splits = num_splits or default_splits(batch, num_items, device)
    split_items = items_per_split(num_items, splits)
    splits = cdiv(num_items, split_items)
    emit = thresholds is not None
    if emit and capacity < width:
        raise ValueError(
            f"fused_mol_topk capacity must be >= min(k, X) = {width} with thresholds, got {capacity}"
        )
    out = torch.empty(batch if not emit else 1, splits, k_pad, dtype=torch.int64, device=device)
    thr = torch.full((rows,), EMPTY_KEY, dtype=torch.int64, device=device)
    counts = torch.zeros(rows, dtype=torch.int32, device=device)
    candidates = torch.full((rows, capacity if emit else 1), EMPTY_KEY, dtype=torch.int64, device=device)
    if emit:
        thr[:batch] = thresholds.to(device=device, dtype=torch.int64)
    args = (items, item_gate, queries, query_gate, w1, b1, w2, b2, excl, out, thr, counts, candidates)
    scalars = (num_items, batch, split_items, splits, num_excl, width, candidates.shape[1])
    scalars = (*scalars, 1.0 / temperature, items.stride(0))
    meta = {
        "PQ": pq,
        "PX": px,
        "D": dim,
        "PQP": pqp,
        "PXP": pxp,
        "D_PAD": d_pad,
        "H_PAD": h_pad,
        "H_CHUNK": h_chunk,
        "K_PAD": k_pad,
        "E_BLOCK": min(16, next_pow2(num_excl, floor=2)),
        "HAS_EXCL": has_excl,
        "PRUNE": prune,
        "PRECISION": "ieee" if compute_dtype == torch.float32 else None,
        "UPCAST": bf16 and not cuda,  # the Triton CPU interpreter multiplies bf16 dots wrongly
        "ABLATE": ablate,
        "EMIT": emit,
        "MERGE_TILES": merge_tiles,
        "STEP_TILES": step_tiles,
    }
    bucket = min(next_pow2(batch, floor=1), 1024)

    def launch(fast_mode: int) -> None:
        if tune:
            grid = lambda m: (triton.cdiv(batch, m["BQ"]), splits)  # noqa: E731
            _tuned()[grid](*args, *scalars, item_gate.stride(0), bucket, **meta, FAST_MATH=fast_mode)
            return
        for stage_count in range(stages, 0, -1):  # fewer pipelined tiles when shared memory overflows
            try:
                compiled = mol_topk_block_kernel[(triton.cdiv(batch, bq), splits)](
                    *args,
                    *scalars,
                    item_gate.stride(0),
                    bucket,
                    **meta,
                    FAST_MATH=fast_mode,
                    BQ=bq,
                    BX=bx,
                    num_warps=warps,
                    num_stages=stage_count,
                    **({"maxnreg": maxnreg} if maxnreg else {}),  # a launch option: only when given
                )
                LAST_COMPILED.update(
                    {name: getattr(compiled, name, None) for name in ("n_regs", "n_spills")},
                    block=(bq, bx, warps, stage_count),
                )
                return
            except OutOfResources:
                if stage_count == 1:
                    raise

    try:
        launch(fast)
    except OutOfResources:
        raise
    except Exception as err:  # inline PTX (hardware tanh) that this toolchain rejects: exact math instead
        if not fast:
            raise
        _fast_math_failed = True
        warnings.warn(
            f"fused_mol_topk: fast math failed ({type(err).__name__}: {err}); using exact SiLU", stacklevel=2
        )
        launch(0)
    if not emit:
        return decode_keys(torch.topk(out.view(batch, -1), width, dim=1).values)
    overflow = int(counts[:batch].max())  # one host sync: a candidate row that overflowed is incomplete
    if overflow > capacity:
        log.warning(
            "fused_mol_topk: up to %d candidates above the thresholds for %d slots per query; "
            "searching these %d queries again with the running top-k",
            overflow,
            capacity,
            batch,
        )
        return fused_mol_topk(
            query_components, query_gate, item_components, item_gate,
            qi_hidden_weight=qi_hidden_weight, qi_hidden_bias=qi_hidden_bias, qi_out_weight=qi_out_weight,
            qi_out_bias=qi_out_bias, temperature=temperature, k=k, exclude_positions=exclude_positions,
            block_x=block_x, num_splits=num_splits, block_q=block_q, num_warps=num_warps, hidden_chunk=hidden_chunk,
            tune=tune, prune=prune, fast_math=fast_math, merge_tiles=merge_tiles, maxnreg=maxnreg,
            step_tiles=step_tiles,
        )  # fmt: skip
    # slots past a query's count may hold keys of the autotuner's timing runs of other configs: not results
    found = candidates[:batch]
    found = found.masked_fill(
        torch.arange(capacity, device=device)[None, :] >= counts[:batch, None], EMPTY_KEY
    )
    return decode_keys(torch.topk(found, width, dim=1).values)
