"""Graded ranking metrics (rails.retrieval.metrics): hand-computed cases and a torchmetrics oracle."""

from __future__ import annotations

import math

import pytest
import torch

from rails.retrieval.metrics import graded_metric_sums, graded_metrics, ranks_from_topk

INF = math.inf


def test_two_binary_relevant_passages() -> None:
    # Relevant passages at ranks 1 and 3.
    m = graded_metrics(torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 1.0]]))
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["recall@100"] == pytest.approx(1.0)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["mrr@10"] == pytest.approx(1.0)


def test_graded_relevance_and_a_missed_passage() -> None:
    # Grade-2 passage at rank 2, grade-1 passage not retrieved.
    m = graded_metrics(torch.tensor([[2.0, INF]]), torch.tensor([[2.0, 1.0]]))
    assert m["recall@1"] == 0.0
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3)))
    assert m["mrr@10"] == pytest.approx(0.5)


def test_padding_cutoffs_and_averaging() -> None:
    # Query 0: one relevant at rank 11 (+ a padding slot); query 1: one relevant at rank 1.
    ranks = torch.tensor([[11.0, 1.0], [1.0, INF]])  # padding slot of query 0 has a (meaningless) rank 1
    grades = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    m = graded_metrics(ranks, grades)
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["recall@100"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(0.5)
    sums = graded_metric_sums(ranks, grades, recall_ks=[100], ndcg_ks=[20], mrr_ks=[20])
    assert sums["ndcg@20"].item() == pytest.approx(1 / math.log2(12) + 1.0)
    assert sums["mrr@20"].item() == pytest.approx(1 / 11 + 1.0)


def test_ideal_dcg_is_truncated_at_k() -> None:
    # 3 relevant passages at ranks 1..3, cutoff 2: perfect ranking, nDCG@2 = 1 (IDCG uses the top 2 only).
    m = graded_metrics(
        torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3), recall_ks=[2], ndcg_ks=[2], mrr_ks=[1]
    )
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["mrr@1"] == pytest.approx(1.0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least one relevant"):
        graded_metrics(torch.tensor([[1.0]]), torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="1-based"):
        graded_metrics(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match=r"\(Q, J\)"):
        graded_metrics(torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="cutoffs"):
        graded_metrics(torch.tensor([[1.0]]), torch.tensor([[1.0]]), recall_ks=[0])


def test_ranks_from_topk() -> None:
    topk = torch.tensor([[5, 2, 9], [1, 3, 4]])
    relevant = torch.tensor([[9, 2, -1], [7, -1, -1]])
    ranks = ranks_from_topk(topk, relevant)
    assert ranks[0, :2].tolist() == [3.0, 2.0]
    assert math.isinf(ranks[0, 2]) and math.isinf(ranks[1, 0])


def test_matches_torchmetrics_on_random_scores() -> None:
    tm = pytest.importorskip("torchmetrics.retrieval")
    gen = torch.Generator().manual_seed(0)
    queries, items, width = 6, 25, 4
    scores = torch.rand(queries, items, generator=gen, dtype=torch.float64)
    grades = torch.zeros(queries, items)
    for q in range(queries):
        chosen = torch.randperm(items, generator=gen)[: 1 + q % width]
        grades[q, chosen] = torch.randint(1, 4, (len(chosen),), generator=gen).float()
    order = scores.argsort(dim=1, descending=True)
    full_ranks = torch.empty_like(scores)
    full_ranks.scatter_(1, order, torch.arange(1, items + 1, dtype=torch.float64).expand(queries, -1).clone())
    # Pack the relevant passages of each query into a padded (Q, J) layout.
    rel_ranks = torch.full((queries, width), INF, dtype=torch.float64)
    rel_grades = torch.zeros(queries, width)
    for q in range(queries):
        idx = grades[q].nonzero()[:, 0]
        rel_ranks[q, : len(idx)] = full_ranks[q, idx]
        rel_grades[q, : len(idx)] = grades[q, idx]
    ours = graded_metrics(rel_ranks, rel_grades, recall_ks=[1, 5], ndcg_ks=[3, 10], mrr_ks=[5])
    indexes = torch.arange(queries)[:, None].expand(-1, items).reshape(-1)
    preds, target = scores.reshape(-1), grades.reshape(-1)
    for k in (3, 10):
        oracle = tm.RetrievalNormalizedDCG(top_k=k)(preds, target, indexes=indexes).item()
        assert ours[f"ndcg@{k}"] == pytest.approx(oracle, abs=1e-6)
    for k in (1, 5):
        oracle = tm.RetrievalRecall(top_k=k)(preds, target > 0, indexes=indexes).item()
        assert ours[f"recall@{k}"] == pytest.approx(oracle, abs=1e-6)
    oracle = tm.RetrievalMRR(top_k=5)(preds, target > 0, indexes=indexes).item()
    assert ours["mrr@5"] == pytest.approx(oracle, abs=1e-6)
