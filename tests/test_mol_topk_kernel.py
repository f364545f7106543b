"""Blocked fused MoL top-k kernel (``rails.kernels.mol_topk_triton``) against a float64 reference.

The kernel takes tensors and numbers, so these tests feed it random states and gating weights directly (no
head): both paper head shapes (8x4x64, 8x8x32) and an odd one (3x2x8, padded pairs and d_P), B in
{1, 5, 33} (one and several query blocks, a partial last block), k in {1, 10, 100}, history exclusion,
exact ties from duplicated items (resolved by the lower position), fp32 (ids equal up to ties) and bf16
(scores within tolerance, ids up to ties of the bf16 reference). On CPU the cases run through the Triton
interpreter (``TRITON_INTERPRET=1``) in one subprocess so the flag is set before Triton is imported; on
CUDA (``gpu`` marker) the same checks run at 1M-free sizes for each batch regime (B = 1, 32, 256).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from tests.topk_compare import assert_bf16_scores_close, assert_same_topk, bf16_score_tolerance
from tests.triton_interpreter import run_interpreted


@dataclass
class Problem:
    """Random MoL states and gating weights (float32 masters) for ``fused_mol_topk``."""

    query_components: Tensor  # (B, P_Q, d)
    query_gate: Tensor  # (B, P)
    item_components: Tensor  # (X, P_X, d)
    item_gate: Tensor  # (X, P)
    w1: Tensor  # (H, P)
    b1: Tensor  # (H,)
    w2: Tensor  # (P, H)
    b2: Tensor  # (P,)
    temperature: float = 0.05


def make_problem(
    batch: int,
    items: int,
    pq: int,
    px: int,
    dim: int,
    hidden: int = 24,
    seed: int = 0,
    prunable: bool = False,
) -> Problem:
    """Unit components, non-trivial gating; items 1 and 2 are copies of item 0 (exact score ties).

    ``prunable``: queries share one direction u and two of every three runs of 16 items point away from it
    (every logit near -1 / tau), so whole tiles cannot reach the top-k and the kernel's prune skips them.
    """
    g = torch.Generator().manual_seed(seed)
    pairs = pq * px
    qc = torch.randn(batch, pq, dim, generator=g)
    ic = torch.nn.functional.normalize(torch.randn(items, px, dim, generator=g), dim=-1)
    if prunable:
        u = torch.randn(dim, generator=g)
        qc = u + 0.3 * qc
        away = (torch.arange(items) // 16) % 3 != 0
        ic[away] = -u + 0.1 * torch.randn(int(away.sum()), px, dim, generator=g)
    qc = torch.nn.functional.normalize(qc, dim=-1)
    ic = torch.nn.functional.normalize(ic, dim=-1)
    ig = torch.randn(items, pairs, generator=g)
    if items >= 3:
        ic[1:3] = ic[0]
        ig[1:3] = ig[0]
    return Problem(
        qc,
        torch.randn(batch, pairs, generator=g),
        ic,
        ig,
        torch.randn(hidden, pairs, generator=g) / math.sqrt(pairs),
        torch.randn(hidden, generator=g),
        torch.randn(pairs, hidden, generator=g) / math.sqrt(hidden),
        torch.randn(pairs, generator=g),
    )


def reference_scores(pb: Problem, dtype: torch.dtype, device: str = "cpu") -> Tensor:
    """(B, X) float64 MoL scores (on CPU) of the states rounded to ``dtype`` (what the kernel is given)."""
    r = lambda t: t.to(device=device, dtype=dtype).double()  # noqa: E731
    batch, pq, _ = pb.query_components.shape
    items, px, _ = pb.item_components.shape
    logits = torch.einsum("bid,xjd->bxij", r(pb.query_components), r(pb.item_components))
    logits = logits.reshape(batch, items, pq * px) / pb.temperature
    silu = torch.nn.functional.silu
    qi = silu(logits @ r(pb.w1).T + r(pb.b1)) @ r(pb.w2).T + r(pb.b2)
    gate = silu(pb.query_gate.to(device).double()[:, None, :] * r(pb.item_gate)[None] + qi)
    return (torch.softmax(gate, -1) * logits).sum(-1).cpu()


def run_kernel(pb: Problem, k: int, dtype: torch.dtype, device: str, exclude: Tensor | None, **kw):
    from rails.kernels.mol_topk_triton import fused_mol_topk

    to = lambda t: t.to(device)  # noqa: E731
    return fused_mol_topk(
        to(pb.query_components),
        to(pb.query_gate),
        to(pb.item_components).to(dtype),
        to(pb.item_gate).to(dtype),
        qi_hidden_weight=to(pb.w1),
        qi_hidden_bias=to(pb.b1),
        qi_out_weight=to(pb.w2),
        qi_out_bias=to(pb.b2),
        temperature=pb.temperature,
        k=k,
        exclude_positions=None if exclude is None else to(exclude),
        **kw,
    )


def ranked_problem() -> Problem:
    """One query, 32 items: item 0 is the best, item 20 (second tile of 16) the second, the rest far below.

    With k = 2 the second tile holds exactly one item that enters the top-k without beating the best one,
    so a filter that compares with anything but the k-th best key drops it.
    """
    pb = make_problem(1, 32, 8, 4, 64, seed=5)
    g = torch.Generator().manual_seed(6)
    u = torch.nn.functional.normalize(pb.query_components[0].mean(0), dim=-1)
    ic = -u + 0.1 * torch.randn(32, 4, 64, generator=g)
    ic[0] = u + 0.05 * torch.randn(4, 64, generator=g)
    ic[20] = u + 0.5 * torch.randn(4, 64, generator=g)
    pb.item_components = torch.nn.functional.normalize(ic, dim=-1)
    return pb


def check_case(
    batch,
    items,
    pq,
    px,
    dim,
    k,
    dtype,
    device="cpu",
    exclude_history=True,
    seed=0,
    prunable=False,
    problem=None,
    **kw,
):
    """Run one case and compare with the float64 reference; returns the kernel's (scores, positions)."""
    pb = problem or make_problem(batch, items, pq, px, dim, seed=seed, prunable=prunable)
    ref = reference_scores(pb, dtype, device)
    exclude = None
    if exclude_history:  # drop each query's true best 2 (and padding -1s); query 0 also loses item 0
        exclude = torch.full((batch, 5), -1, dtype=torch.int64)
        exclude[:, :2] = torch.sort(ref, dim=1, descending=True, stable=True).indices[:, :2]
        exclude[0, 2] = 0
        hit = (torch.arange(items)[None, :, None] == exclude[:, None, :]).any(2)
        ref = ref.masked_fill(hit, -math.inf)
    ref_values, ref_ids = torch.sort(ref, dim=1, descending=True, stable=True)
    scores, positions = run_kernel(pb, k, dtype, device, exclude, **kw)
    scores, positions = scores.cpu(), positions.cpu()
    width = min(k, items)
    assert scores.shape == positions.shape == (batch, width)
    assert torch.all(scores[:, :-1] >= scores[:, 1:]), "scores must be sorted descending"
    tied = (scores[:, :-1] == scores[:, 1:]) & torch.isfinite(scores[:, 1:])
    assert torch.all(positions[:, :-1][tied] < positions[:, 1:][tied]), (
        "equal scores must be in position order"
    )
    finite = torch.isfinite(ref_values[:, :width])
    assert torch.equal(positions == -1, ~finite) and torch.equal(torch.isinf(scores), ~finite)
    for row in range(batch):
        tol = bf16_score_tolerance(ref[row]) if dtype == torch.bfloat16 else 2e-4
        n = int(finite[row].sum())
        found = positions[row, :n]
        assert len(set(found.tolist())) == n
        if exclude is not None:
            assert not set(found.tolist()) & set(exclude[row].tolist())
        # each returned score is the reference score of the returned item
        if dtype == torch.bfloat16:
            assert_bf16_scores_close(scores[row, :n], ref[row, found], ref[row])
        else:
            torch.testing.assert_close(scores[row, :n].double(), ref[row, found], rtol=0, atol=tol)
        assert_same_topk(
            scores[None, row, :n],
            found[None],
            ref_values[None, row, :n],
            ref_ids[None, row, :n],
            rtol=0,
            atol=tol,
        )
    return scores, positions


# (B, X, P_Q, P_X, d_P, k, dtype, kwargs): every head shape, B regime, k extreme and both dtypes at least once.
INTERPRETER_CASES = [
    (1, 200, 8, 4, 64, 100, torch.float32, {"num_splits": 2}),
    (33, 100, 8, 4, 64, 1, torch.float32, {"block_x": 32}),  # 5 query blocks, the last one partial
    (5, 150, 8, 8, 32, 10, torch.float32, {"num_splits": 3, "block_q": 4, "block_x": 16}),
    (33, 60, 3, 2, 8, 10, torch.float32, {}),  # P_Q, P_X, d_P all padded
    (5, 90, 3, 2, 8, 1, torch.float32, {"block_x": 8, "prune": False}),
    (5, 28, 2, 3, 4, 30, torch.float32, {}),  # k > X: every item not excluded, then -inf / -1
    (5, 120, 8, 4, 64, 10, torch.bfloat16, {"num_splits": 2}),
    (1, 150, 8, 8, 32, 100, torch.bfloat16, {}),
    (17, 50, 3, 2, 8, 100, torch.bfloat16, {"block_x": 32}),  # k > X minus the excluded: -inf / -1 padding
    (2, 384, 8, 4, 64, 10, torch.float32, {"prunable": True, "block_x": 16, "block_q": 2, "num_splits": 1}),
    # the gating hidden layer (24 units, padded to 32) in two steps of 16: fp32 and bf16, padded pairs
    (5, 150, 8, 4, 64, 10, torch.float32, {"hidden_chunk": 16, "num_splits": 2}),
    (33, 60, 3, 2, 8, 10, torch.bfloat16, {"hidden_chunk": 16}),
    # merged tiles parked and sorted in together (min(merge_tiles, K_PAD // BX) per sort): 8 of 8, 2 of 2 (16 asked),
    # 4 of 16, a merge at the end of a split with slots still empty, fp32 and bf16, padded pairs, several query blocks
    (1, 200, 8, 4, 64, 100, torch.float32, {"num_splits": 2, "block_x": 16, "merge_tiles": 8}),
    (33, 100, 3, 2, 8, 10, torch.float32, {"block_x": 8, "merge_tiles": 16}),
    (5, 120, 8, 4, 64, 100, torch.bfloat16, {"block_x": 8, "block_q": 2, "merge_tiles": 4}),
    # two tiles per loop step (their 2 * BX keys one step's tile): parked steps, one sort per step (2 * BX >= K_PAD:
    # the top-k path), a split ending inside a step's second tile, the prune over both tiles, the hidden layer in
    # steps, bf16
    (1, 200, 8, 4, 64, 100, torch.float32, {"num_splits": 2, "block_x": 16, "step_tiles": 2}),
    (33, 100, 3, 2, 8, 10, torch.float32, {"block_x": 8, "step_tiles": 2, "merge_tiles": 1}),
    (5, 120, 8, 4, 64, 100, torch.bfloat16, {"block_x": 8, "block_q": 2, "step_tiles": 2, "num_splits": 3}),
    (2, 384, 8, 4, 64, 10, torch.float32, {"prunable": True, "block_x": 16, "block_q": 2, "step_tiles": 2}),
    (5, 150, 8, 4, 64, 10, torch.float32, {"hidden_chunk": 16, "num_splits": 2, "step_tiles": 2}),
]


def _interpreter_main() -> None:
    torch.set_num_threads(1)
    for batch, items, pq, px, dim, k, dtype, kw in INTERPRETER_CASES:
        check_case(batch, items, pq, px, dim, k, dtype, **kw)
    # exact ties: items 0, 1, 2 are copies; k = X returns all three, in position order
    scores, positions = check_case(2, 64, 3, 2, 8, 64, torch.float32, exclude_history=False, seed=3)
    for row in range(2):
        at = [positions[row].tolist().index(i) for i in range(3)]
        assert at == sorted(at) and at[2] - at[0] == 2 and len(set(scores[row, at].tolist())) == 1
    kw = {"exclude_history": False, "problem": ranked_problem(), "block_x": 16, "num_splits": 1}
    _, positions = check_case(1, 32, 8, 4, 64, 2, torch.float32, **kw)
    assert positions.tolist() == [[0, 20]]
    kw = {**kw, "block_x": 8, "merge_tiles": 2}  # the second-best item parked, then sorted in
    _, positions = check_case(1, 32, 8, 4, 64, 2, torch.float32, **kw)
    assert positions.tolist() == [[0, 20]]
    scores, positions = check_case(2, 64, 3, 2, 8, 64, torch.float32, exclude_history=False, seed=3,
                                   block_x=8, merge_tiles=4)  # fmt: skip
    for row in range(2):  # the three copies stay together, in position order
        at = [positions[row].tolist().index(i) for i in range(3)]
        assert at == sorted(at) and at[2] - at[0] == 2 and len(set(scores[row, at].tolist())) == 1
    check_ablations_run("cpu", torch.float32)
    with pytest.raises(ValueError, match="step_tiles must be 1 or 2"):
        run_kernel(make_problem(2, 40, 3, 2, 8), 5, torch.float32, "cpu", None, step_tiles=3)
    print("MOL_TOPK_OK")


def check_ablations_run(device: str, dtype: torch.dtype) -> None:
    """The timing ablations (scripts/profile_fused_exact.py) compile and return (B, k) results."""
    pb = make_problem(4, 600, 8, 4, 64)
    for ablate, step_tiles in ((1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)):
        kw = {
            "block_x": 16,
            "block_q": 8,
            "num_splits": 1,
            "tune": False,
            "ablate": ablate,
            "step_tiles": step_tiles,
        }
        scores, positions = run_kernel(pb, 10, dtype, device, None, **kw)
        assert scores.shape == positions.shape == (4, 10), (ablate, step_tiles)


@pytest.mark.slow
def test_kernel_matches_float64_under_triton_interpreter():
    run_interpreted("tests.test_mol_topk_kernel", "MOL_TOPK_OK")


@pytest.mark.parametrize(("pq", "px"), [(8, 4), (8, 8), (3, 2), (1, 1), (16, 2)])
@pytest.mark.parametrize("batch", [1, 5, 32, 256])
def test_default_and_tuned_blocks_are_valid(pq, px, batch):
    triton = pytest.importorskip("triton")
    from rails.kernels.mol_topk_triton import (
        block_valid,
        default_blocks,
        pair_padding,
        prune_configs,
        tune_configs,
    )

    pqp, pxp = pair_padding(pq, px)
    assert pqp >= pq and pxp >= px and pqp * pxp >= 16
    for k_pad in (16, 128, 256):
        bq, bx, _, _ = default_blocks(batch, pqp, pxp)
        assert block_valid(bq, bx, pqp, pxp, k_pad)
        for block_x in (16, 64, 128):  # the benchmark's --fused-configs fix BX only
            assert (
                block_valid(*default_blocks(batch, pqp, pxp, block_x)[:2], pqp, pxp, k_pad)
                or max(1, 16 // pqp) * block_x > 256  # P_Q = 1 needs 16 queries per tile
            )
        assert bq <= max(16 // pqp, 16)  # B = 1 must not pay for a large query block
        configs = tune_configs(triton.Config)
        # Triton passes positional arguments as named_args and constexpr keywords separately
        kept = prune_configs(configs, {"batch_bucket": batch}, PQP=pqp, PXP=pxp, K_PAD=k_pad)
        assert kept and all(block_valid(c.kwargs["BQ"], c.kwargs["BX"], pqp, pxp, k_pad) for c in kept)
        assert all(c.kwargs["BQ"] <= max(16 // pqp, batch, 1) or len(kept) == 1 for c in kept)


def test_the_autotuner_keys_are_kernel_arguments():
    pytest.importorskip("triton")
    from rails.kernels.mol_topk_kernel import mol_topk_block_kernel
    from rails.kernels.mol_topk_triton import _tuned, tuned_config

    assert set(_tuned().keys) <= set(mol_topk_block_kernel.arg_names)
    assert "ABLATE" in _tuned().keys and tuned_config() is None  # nothing tuned on this CPU


def test_block_arguments_are_checked():
    pytest.importorskip("triton")
    pb = make_problem(2, 10, 8, 4, 16)
    with pytest.raises(ValueError, match="power of two"):
        run_kernel(pb, 5, torch.float32, "cpu", None, block_x=24)
    with pytest.raises(ValueError, match="block_q=1 x block_x=16"):
        run_kernel(pb, 5, torch.float32, "cpu", None, block_x=16, block_q=1)
    with pytest.raises(ValueError, match="block_q \\* block_x <= 256"):
        run_kernel(pb, 5, torch.float32, "cpu", None, block_x=128, block_q=4)
    with pytest.raises(ValueError, match="1 <= k <= 256"):
        run_kernel(pb, 300, torch.float32, "cpu", None)
    with pytest.raises(ValueError, match="merge_tiles must be a power of two >= 1, got 3"):
        run_kernel(pb, 5, torch.float32, "cpu", None, merge_tiles=3)
    for chunk in (8, 24):
        with pytest.raises(ValueError, match=f"hidden_chunk must be a power of two >= 16, got {chunk}"):
            run_kernel(pb, 5, torch.float32, "cpu", None, hidden_chunk=chunk)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 32, 256])  # the three regimes: 2, 8 and 8-16 queries per program
@pytest.mark.parametrize(("pq", "px", "dim"), [(8, 4, 64), (8, 8, 32)])
def test_kernel_cuda_regimes_match_float64(batch, pq, px, dim):
    # autotuning compiles every config (seconds each): one case tunes, the others run the per-batch defaults
    tune = None if (batch, pq, px, dim) == (32, 8, 4, 64) else False
    check_case(batch, 30011, pq, px, dim, 100, torch.bfloat16, device="cuda", tune=tune)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("hidden_chunk", [32, 64])
def test_kernel_cuda_hidden_chunks_match_float64(hidden_chunk):
    """The gating MLP in steps of 32 / 64 of its 128 hidden units: bf16 (fast math) at two block shapes, fp32."""
    kw = {"hidden_chunk": hidden_chunk, "tune": False}
    pb = make_problem(32, 20011, 8, 4, 64, hidden=128)
    check_case(32, 20011, 8, 4, 64, 100, torch.bfloat16, device="cuda", problem=pb, **kw)
    check_case(
        32, 20011, 8, 4, 64, 100, torch.bfloat16, device="cuda", problem=pb, block_q=32, block_x=4, **kw
    )
    pb = make_problem(5, 4099, 8, 4, 64, hidden=128, seed=1)
    check_case(5, 4099, 8, 4, 64, 10, torch.float32, device="cuda", problem=pb, **kw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    ("block", "merge_tiles", "maxnreg", "step_tiles"),
    [
        ((8, 8, 4), 16, None, 1),
        ((8, 8, 4), 4, None, 1),
        ((4, 32, 8), 4, None, 1),
        ((2, 64, 8), 2, None, 1),
        ((4, 32, 8), 16, 128, 1),
        ((8, 8, 4), 16, 128, 1),
        ((4, 16, 8), 16, None, 2),
        ((8, 8, 4), 16, None, 2),
        ((4, 32, 8), 16, None, 2),
    ],  # fmt: skip
)
def test_kernel_cuda_merge_tiles_match_float64(block, merge_tiles, maxnreg, step_tiles):
    """The running top-k with parked tiles at the shapes it serves (bf16 with fast math, fp32), also under a
    128-register cap (``maxnreg``, spilling) and with two tiles per loop step."""
    bq, bx, warps = block
    kw = {
        "block_q": bq,
        "block_x": bx,
        "num_warps": warps,
        "tune": False,
        "prune": False,
        "merge_tiles": merge_tiles,
        "maxnreg": maxnreg,
        "step_tiles": step_tiles,
    }
    pb = make_problem(32, 30011, 8, 4, 64, hidden=128)
    check_case(32, 30011, 8, 4, 64, 100, torch.bfloat16, device="cuda", problem=pb, **kw)
    check_case(5, 4099, 3, 2, 8, 10, torch.float32, device="cuda", **{**kw, "block_q": 8, "block_x": 8})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fast_math", [False, True])
def test_kernel_cuda_exact_and_fast_math(fast_math):
    check_case(32, 20011, 8, 4, 64, 100, torch.bfloat16, device="cuda", fast_math=fast_math, tune=False)
    check_case(5, 4099, 3, 2, 8, 10, torch.float32, device="cuda", tune=False)
    check_case(2, 3000, 8, 4, 64, 10, torch.bfloat16, device="cuda", prunable=True, fast_math=fast_math)
    kw = {"exclude_history": False, "problem": ranked_problem(), "block_x": 16, "num_splits": 1}
    assert check_case(1, 32, 8, 4, 64, 2, torch.float32, device="cuda", **kw)[1].tolist() == [[0, 20]]
    check_ablations_run("cuda", torch.bfloat16)


if __name__ == "__main__":
    _interpreter_main()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4x32", (4, 32, None, None)),
        ("8X8x4", (8, 8, 4, None)),
        ("8x16x8:32", (8, 16, 8, 32)),
        ("2x64:16", (2, 64, None, 16)),
    ],
)
def test_launch_strings_parse(text, expected):
    from rails.kernels.mol_topk_blocks import parse_launch

    assert parse_launch(text) == expected


@pytest.mark.parametrize("text", ["4", "4x32x8x2", "0x8", "4y32", "8x8x4:", "8x8:x", "-4x8", ""])
def test_bad_launch_strings_name_themselves(text):
    from rails.kernels.mol_topk_blocks import parse_launch

    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_launch(text)
