"""Fused Triton MoL top-k against a float64 PyTorch reference (CPU interpreter on tiny shapes; CUDA).

The kernel takes tensors and numbers (``rails.kernels.mol_topk_triton``); the index layer feeds it a MoL
head's states and ``head.mixing()`` (``rails.retrieval.indexes.exact.fused_mol_search``).
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch

from rails.models.similarity import MoLSimilarity
from tests.topk_compare import assert_bf16_scores_close, assert_same_topk, bf16_score_tolerance
from tests.triton_interpreter import run_interpreted


def random_mol(pq: int, px: int, dim: int, seed: int) -> MoLSimilarity:
    torch.manual_seed(seed)
    head = MoLSimilarity(
        query_dim=24,
        item_dim=20,
        num_query_components=pq,
        num_item_components=px,
        component_dim=dim,
        query_hidden_dim=32,
        gating_query_hidden_dim=16,
        gating_item_hidden_dim=16,
        gating_qi_hidden_dim=24,  # not a power of two: exercises padding
    ).eval()
    with torch.no_grad():  # non-trivial gating: random biases and larger weights
        for module in head.gating.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(3.0)
                if module.bias is not None:
                    module.bias.normal_()
    return head


@torch.no_grad()
def reference_topk(head, queries, items, k, exclude_positions=None, state_dtype=None):
    """float64 full score matrix + stable sort.

    ``state_dtype`` rounds what the kernel is given in that dtype (bf16) before the float64 scoring: the item
    state, the query components and the two weight matrices of the query-item gating MLP (the kernel's
    ``fused_mol_topk`` casts all four to its compute dtype), so the comparison measures the kernel's own
    arithmetic, not the input quantisation.
    """
    ref = random_like(head).double()
    if state_dtype is not None:
        with torch.no_grad():
            for layer in (ref.gating.qi_part[1], ref.gating.qi_part[3]):
                layer.weight.copy_(layer.weight.to(state_dtype).to(torch.float64))
    item_state = ref.encode_items(items.double())
    query_state = ref.encode_queries(queries.double())
    if state_dtype is not None:
        item_state = item_state.to(state_dtype).to(torch.float64)
        rounded = query_state.components.to(state_dtype).to(torch.float64)
        query_state = dataclasses.replace(query_state, components=rounded)
    scores = ref.score(query_state, item_state)
    if exclude_positions is not None:
        hit = (torch.arange(items.shape[0])[None, :, None] == exclude_positions[:, None, :].cpu()).any(2)
        scores = scores.masked_fill(hit.to(scores.device), -math.inf)
    return torch.sort(scores, dim=1, descending=True, stable=True)


def random_like(head: MoLSimilarity) -> MoLSimilarity:
    import copy

    return copy.deepcopy(head)


@torch.no_grad()
def check_fused(
    device: str, dtype: torch.dtype, num_items: int, k: int, pq: int, px: int, dim: int, batch: int = 3, **kw
):
    from rails.retrieval.indexes.exact import fused_mol_search, fused_mol_unsupported

    head = random_mol(pq, px, dim, seed=0).to(device)
    gen = torch.Generator().manual_seed(1)
    items = torch.randn(num_items, 20, generator=gen).to(device)
    queries = torch.randn(batch, 24, generator=gen).to(device)
    exclude = torch.full((batch, 5), -1, dtype=torch.int64)
    ref_values, ref_order = reference_topk(head, queries, items, num_items)
    exclude[0, :3] = ref_order[0, :3].cpu()  # drop the true top 3 of query 0
    exclude[1:, 0] = ref_order[1:, 7].cpu()  # and the 8th of every other query
    exclude = exclude.to(device)
    ref_values, ref_order = reference_topk(head, queries, items, num_items, exclude, state_dtype=dtype)
    item_state = head.encode_items(items).to(dtype)
    query_state = head.encode_queries(queries)
    assert fused_mol_unsupported(head, query_state, item_state, k) is None
    scores, positions = fused_mol_search(head, query_state, item_state, k, exclude, **kw)
    width = min(k, num_items)
    assert scores.shape == (batch, width) and positions.shape == (batch, width)
    for row in range(batch):
        tol = bf16_score_tolerance(ref_values[row]) if dtype == torch.bfloat16 else 1e-4
        excluded = {e for e in exclude[row].tolist() if e >= 0}
        filled = min(width, num_items - len(excluded))
        found = positions[row, :filled]
        assert len(set(found.tolist())) == filled and not set(found.tolist()) & excluded
        assert (positions[row, filled:] == -1).all() and torch.isinf(scores[row, filled:]).all()
        exact_at = ref_values.new_full((num_items,), -math.inf)
        exact_at[ref_order[row]] = ref_values[row]
        if dtype == torch.bfloat16:
            assert_bf16_scores_close(scores[row, :filled], exact_at[found], ref_values[row])
        else:
            torch.testing.assert_close(scores[row, :filled].double(), exact_at[found], rtol=0, atol=tol)
        if dtype == torch.float32:  # the float64 order, up to ties within the kernel's rounding
            assert_same_topk(
                scores[None, row, :filled],
                found[None],
                ref_values[None, row, :filled],
                ref_order[None, row, :filled],
                rtol=0,
                atol=tol,
            )
        else:
            overlap = len(set(found.tolist()) & set(ref_order[row, :filled].tolist()))
            assert overlap >= 0.9 * filled
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def _interpreter_main() -> None:
    torch.set_num_threads(1)
    check_fused("cpu", torch.float32, num_items=150, k=10, pq=3, px=2, dim=8, num_splits=2)
    check_fused("cpu", torch.float32, num_items=20, k=30, pq=2, px=3, dim=4)  # k > X
    check_fused("cpu", torch.bfloat16, num_items=40, k=16, pq=8, px=4, dim=16, block_q=2, block_x=16)
    print("FUSED_OK")


@pytest.mark.slow
def test_fused_kernel_under_triton_interpreter():
    run_interpreted("tests.test_retrieval_fused", "FUSED_OK")


def test_decode_keys_roundtrip():
    from rails.kernels.mol_topk_triton import EMPTY_KEY, decode_keys

    scores = torch.tensor([3.5, -2.25, 0.0, -0.0, float("inf"), -1e-30])
    positions = torch.tensor([0, 7, 123456, 5, 2**31, 9])
    bits = scores.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    keys = ordered * 2**32 + (2**32 - 1 - positions)
    out_scores, out_positions = decode_keys(torch.cat([keys, torch.tensor([EMPTY_KEY])]))
    assert torch.equal(out_scores[:-1], scores) and torch.equal(out_positions[:-1], positions)
    assert out_positions[-1] == -1 and out_scores[-1] == -math.inf
    order = torch.argsort(keys, descending=True)  # key order == (score desc, position asc)
    assert torch.all(scores[order][:-1] >= scores[order][1:])


def test_fused_kernel_refusals_name_the_reason():
    from rails.models.similarity import DotProductSimilarity
    from rails.retrieval import ExactTopK
    from rails.retrieval.indexes.exact import fused_mol_unsupported

    head = random_mol(2, 2, 4, seed=0)
    queries, items = torch.randn(2, 24), torch.randn(5, 20)
    qs, is_ = head.encode_queries(queries), head.encode_items(items)
    assert "training mode" in fused_mol_unsupported(head.train(), qs, is_, 5)
    head.eval()
    assert "MAX_FUSED_K" in fused_mol_unsupported(head, qs, is_, 1000)
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        assert "neither CUDA nor CPU" in fused_mol_unsupported(head, qs, is_, 5)
    dot = DotProductSimilarity()
    assert "not MoLSimilarity" in fused_mol_unsupported(
        dot, dot.encode_queries(queries), dot.encode_items(items), 5
    )
    with pytest.raises(ValueError, match="fused=True"):
        ExactTopK(fused=True).build(dot, torch.randn(5, 24)).search(queries, 3)
    # fused=None silently uses the chunked path where the kernel does not apply
    _, ids = ExactTopK().build(head, items).search(queries, 3)
    assert ids.shape == (2, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    ("pq", "px", "dim", "dtype", "k", "batch", "tune"),
    [  # autotuning compiles every config (seconds each): only the ML-1M shape at B = 32 tunes, the others
        # run the kernel's per-batch defaults so the GPU suite stays within its 3 minutes
        (8, 4, 64, torch.float32, 100, 32, None),  # the paper's ML-1M MoL shape, autotuned
        (8, 4, 64, torch.bfloat16, 100, 1, False),  # B = 1: bandwidth-bound regime (2 queries per program)
        (8, 4, 64, torch.bfloat16, 100, 32, None),
        (8, 4, 64, torch.bfloat16, 100, 256, False),  # B = 256: 8-16 queries per program
        (8, 8, 32, torch.bfloat16, 1, 32, False),  # P = 64 components, k = 1
        (3, 2, 8, torch.float32, 1, 5, False),  # P = 6 and d_P = 8 padded inside the kernel
    ],
)
def test_fused_kernel_cuda_matches_float64(pq, px, dim, dtype, k, batch, tune):
    check_fused("cuda", dtype, num_items=20011, k=k, pq=pq, px=px, dim=dim, batch=batch, tune=tune)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_exact_index_uses_fused_kernel_on_cuda():
    from rails.retrieval import ExactTopK

    head = random_mol(8, 4, 16, seed=0).cuda()
    items = torch.randn(5000, 20, device="cuda")
    queries = torch.randn(7, 24, device="cuda")
    fused = ExactTopK(fused=True).build(head, items).search(queries, 50)
    plain = ExactTopK(fused=False, chunk_size=777).build(head, items).search(queries, 50)
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-4, atol=1e-4)
    assert (fused[1] == plain[1]).float().mean() > 0.99


if __name__ == "__main__":
    _interpreter_main()
