"""Exact and approximate top-k indexes against naive full sorts on tiny random heads (CPU).

Results of different computation orders (chunk sizes, candidate re-scoring, faiss) are compared up to ties
(:mod:`tests.topk_compare`); tie order is tested on integer-valued data, whose scores are exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from rails.models.similarity import DotProductSimilarity, MoLSimilarity
from rails.retrieval import (
    AverageTopK,
    CombinedTopK,
    ExactTopK,
    FaissMIPS,
    PerComponentTopK,
    TorchMIPS,
)
from rails.retrieval.mips import faiss_available
from rails.retrieval.topk import RunningTopK, chunked_topk, stable_topk
from tests.topk_compare import assert_same_topk

NUM_ITEMS, ITEM_DIM, QUERY_DIM = 57, 10, 12


def tiny_mol(seed: int = 0) -> MoLSimilarity:
    torch.manual_seed(seed)
    return MoLSimilarity(
        query_dim=QUERY_DIM,
        item_dim=ITEM_DIM,
        num_query_components=3,
        num_item_components=2,
        component_dim=8,
        query_hidden_dim=16,
        gating_query_hidden_dim=8,
        gating_item_hidden_dim=8,
        gating_qi_hidden_dim=8,
    ).eval()


def corpus(seed: int = 1, num_items: int = NUM_ITEMS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randn(num_items, ITEM_DIM, generator=gen)
    ids = torch.randperm(1000, generator=gen)[:num_items] + 1  # unique, non-contiguous, never 0
    queries = torch.randn(5, QUERY_DIM, generator=gen)
    return items, ids, queries


@torch.no_grad()
def naive_topk(head, items, ids, queries, k, exclude=None):
    """Full score matrix, excluded ids to -inf, stable descending sort (ties: lower position first)."""
    scores = head.score(head.encode_queries(queries), head.encode_items(items)).float()
    if exclude is not None:
        hit = (ids[None, :, None] == exclude[:, None, :]).any(dim=2)
        scores = scores.masked_fill(hit, -math.inf)
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    k = min(k, ids.numel())
    out_ids = torch.where(values[:, :k] == -math.inf, 0, ids[order[:, :k]])
    return values[:, :k], out_ids


def test_stable_topk_matches_stable_sort_with_ties():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (6, 40), generator=gen).float()  # many ties
    for k in (1, 7, 40, 50):
        values, index = stable_topk(scores, k)
        ref_values, ref_index = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(values, ref_values[:, :k]) and torch.equal(index, ref_index[:, :k])


def test_stable_topk_matches_stable_sort_with_ties_signs_and_masks():
    gen = torch.Generator().manual_seed(0)
    scores = (torch.randint(-3, 4, (6, 40), generator=gen) * 0.75).float()  # ties, negatives, zeros
    scores[0, :5] = -math.inf
    scores[1, 3] = -0.0  # ties with +0.0
    scores[2, 10] = 3.4e38
    for k in (1, 7, 40, 50):
        values, index = stable_topk(scores, k)
        ref_values, ref_index = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(values, ref_values[:, :k]) and torch.equal(index, ref_index[:, :k])
    with_nan = scores.clone()
    with_nan[3, 0] = math.nan  # counts as -inf: last, after the real scores
    values, index = stable_topk(with_nan, 40)
    assert index[3, -1] == 0 and values[3, -1] == -math.inf
    running = RunningTopK(5)
    running.update(scores[:, :20], 0)
    running.update(with_nan[:, 20:], 20)  # no NaN here: fine
    assert running.result(6)[0].shape == (6, 5)
    running.update(with_nan[:, :20], 0)
    with pytest.raises(ValueError, match="scores contain NaN"):
        running.result(6)


@pytest.mark.parametrize("chunk", [1, 8, 1000])
def test_chunked_topk_equals_full_sort(chunk):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (4, 30), generator=gen).float()
    values, positions = chunked_topk(lambda s, e: scores[:, s:e], 30, 4, 9, chunk)
    ref_values, ref_index = torch.sort(scores, dim=1, descending=True, stable=True)
    assert torch.equal(values, ref_values[:, :9]) and torch.equal(positions, ref_index[:, :9])


@pytest.mark.parametrize("head_kind", ["dot", "mol"])
@pytest.mark.parametrize(("k", "chunk"), [(1, 7), (10, 16), (NUM_ITEMS, 5), (80, 1000)])
def test_exact_matches_naive(head_kind, k, chunk):
    head = tiny_mol() if head_kind == "mol" else DotProductSimilarity()
    items, ids, queries = corpus()
    if head_kind == "dot":
        items, queries = items[:, :8], queries[:, :8]
    index = ExactTopK(chunk_size=chunk).build(head, items, ids)
    scores, out = index.search(queries, k)
    ref_scores, ref_ids = naive_topk(head, items, ids, queries, k)
    assert scores.shape == (5, min(k, NUM_ITEMS))
    assert_same_topk(scores, out, ref_scores, ref_ids)


def test_exact_exclusions_and_padding():
    head = tiny_mol()
    items, ids, queries = corpus()
    exclude = torch.zeros(5, 60, dtype=torch.int64)
    exclude[0, :3] = ids[:3]
    exclude[1, :] = torch.cat([ids, torch.tensor([0, 5000, 0])])  # everything (+ padding, unknown id)
    exclude[2, :50] = ids[:50]  # 7 items left
    scores, out = ExactTopK(chunk_size=11).build(head, items, ids).search(queries, 10, exclude=exclude)
    ref_scores, ref_ids = naive_topk(head, items, ids, queries, 10, exclude)
    assert_same_topk(scores, out, ref_scores, ref_ids)
    assert not set(out[0].tolist()) & set(ids[:3].tolist())
    assert (out[1] == 0).all() and torch.isinf(scores[1]).all()
    assert (out[2, :7] != 0).all() and (out[2, 7:] == 0).all()


def test_exact_ties_prefer_lower_corpus_position():
    head = DotProductSimilarity(normalize=False)  # integer vectors: exact scores in any summation order
    gen = torch.Generator().manual_seed(2)
    base = torch.randint(-3, 4, (4, 6), generator=gen).float()
    items = base.repeat(5, 1)  # every vector appears 5 times -> 5-way exact ties
    ids = torch.arange(1, 21)
    queries = torch.randint(-3, 4, (3, 6), generator=gen).float()
    _, out = ExactTopK(chunk_size=3).build(head, items, ids).search(queries, 12)
    _, ref = naive_topk(head, items, ids, queries, 12)
    assert torch.equal(out, ref)
    for row in out:  # within each tie group, ids (= positions + 1) increase
        groups = (row - 1) % 4
        for g in groups.unique():
            members = row[groups == g]
            assert torch.equal(members, members.sort().values)


APPROX = {
    "per_component": lambda budget: PerComponentTopK(k_per_pair=budget, fallback_chunk_size=13),
    "average": lambda budget: AverageTopK(num_candidates=budget, fallback_chunk_size=13),
    "combined": lambda budget: CombinedTopK(k_per_pair=budget, num_candidates=budget, fallback_chunk_size=13),
    "per_component_faiss": lambda budget: PerComponentTopK(k_per_pair=budget, mips=FaissMIPS),
    "average_bf16": lambda budget: AverageTopK(
        num_candidates=budget, mips=lambda: TorchMIPS(chunk_size=16, dtype="bfloat16")
    ),
}


@pytest.mark.parametrize("name", sorted(APPROX))
def test_approximate_equals_exact_when_budget_covers_corpus(name):
    head = tiny_mol()
    items, ids, queries = corpus()
    exclude = torch.zeros(5, 4, dtype=torch.int64)
    exclude[0, :2] = ids[5:7]
    exclude[3, :4] = ids[:4]
    index = APPROX[name](NUM_ITEMS).build(head, items, ids)
    for k in (1, 10, NUM_ITEMS):
        scores, out = index.search(queries, k, exclude=exclude)
        ref_scores, ref_ids = (
            ExactTopK(chunk_size=16).build(head, items, ids).search(queries, k, exclude=exclude)
        )
        assert_same_topk(scores, out, ref_scores, ref_ids, msg=name)
    assert index.exact_fallback_rows == 0 or name != "per_component"


@pytest.mark.parametrize("name", sorted(APPROX))
def test_approximate_small_budget_is_valid(name):
    head = tiny_mol()
    items, ids, queries = corpus()
    exclude = torch.zeros(5, 3, dtype=torch.int64)
    exclude[:, 0] = ids[0]
    exclude[2, 1:] = ids[1:3]
    k = 8
    scores, out = APPROX[name](2).build(head, items, ids).search(queries, k, exclude=exclude)
    assert_exact_scored_results(head, items, ids, queries, exclude, scores, out, k)


def assert_exact_scored_results(head, items, ids, queries, exclude, scores, out, k: int) -> None:
    """An approximate search's (B, k) answer: sorted, k distinct corpus ids per row, none excluded, and every
    returned score the exact score of its item."""
    assert out.shape == (len(queries), k) and scores.shape == (len(queries), k)
    assert out.dtype == torch.int64 and scores.dtype == torch.float32
    for row, excluded in zip(out.tolist(), exclude.tolist(), strict=True):
        assert len(set(row)) == k  # de-duplicated, no padding
        assert set(row) <= set(ids.tolist())
        assert not set(row) & {e for e in excluded if e}
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # sorted
    exact = head.score(head.encode_queries(queries), head.encode_items(items))
    position = {int(i): p for p, i in enumerate(ids.tolist())}
    gathered = exact.gather(1, torch.tensor([[position[i] for i in row] for row in out.tolist()]))
    torch.testing.assert_close(scores, gathered, rtol=1e-5, atol=1e-5)


def test_approximate_short_candidates_fall_back_to_exact():
    head = tiny_mol()
    items, ids, queries = corpus()
    index = AverageTopK(num_candidates=3).build(head, items, ids)
    exclude = ids[None, :40].expand(5, -1)  # candidates of AverageTopK may all be excluded...
    _, out = index.search(queries, 10, exclude=exclude)
    _, ref = ExactTopK().build(head, items, ids).search(queries, 10, exclude=exclude)
    per = PerComponentTopK(k_per_pair=1).build(head, items, ids)
    scores_per, out_per = per.search(queries, 30)  # 6 pairs x 1 candidate < 30: every row falls back
    assert per.exact_fallback_rows == 5 and per.exact_fallback.all()
    ref_scores_per, ref_per = ExactTopK().build(head, items, ids).search(queries, 30)
    assert_same_topk(scores_per, out_per, ref_scores_per, ref_per)
    assert (out != 0).all() and out.shape == ref.shape


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_ivf_candidates_are_valid_and_full_probe_is_exact():
    head = tiny_mol()
    items, ids, queries = corpus(num_items=200)
    full = PerComponentTopK(k_per_pair=200, mips=lambda: FaissMIPS(index="ivf", nlist=4, nprobe=4))
    scores, out = full.build(head, items, ids).search(queries, 10)
    ref_scores, ref = ExactTopK().build(head, items, ids).search(queries, 10)
    assert_same_topk(scores, out, ref_scores, ref)
    approx = AverageTopK(num_candidates=20, mips=lambda: FaissMIPS(index="ivf", nlist=8, nprobe=1))
    _, out = approx.build(head, items, ids).search(queries, 10)
    assert all(len(set(row)) == 10 and set(row) <= set(ids.tolist()) for row in out.tolist())


def test_approximate_rejects_non_mol_head_and_bad_keys():
    items, ids, _ = corpus()
    with pytest.raises(ValueError, match="components"):
        PerComponentTopK(k_per_pair=2).build(DotProductSimilarity(), items, ids)
    with pytest.raises(ValueError, match="k_per_pair"):
        PerComponentTopK(k_per_pair=0)
    with pytest.raises(ValueError, match="num_candidates"):
        AverageTopK(num_candidates=0)
    with pytest.raises(ValueError, match="dtype"):
        TorchMIPS(dtype="float8")
    with pytest.raises(RuntimeError, match="build"):
        ExactTopK().search(torch.randn(2, QUERY_DIM), 3)
