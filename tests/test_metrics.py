"""Ranking metrics and exact ranking against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from rails.retrieval.corpus import CorpusPositions, exclusion_mask
from rails.retrieval.judges import target_ranks
from rails.retrieval.metrics import metric_sums, ranks_from_topk, recall_at_k, retrieval_metrics

INF = math.inf


def test_metrics_hand_computed() -> None:
    ranks = torch.tensor([1.0, 3.0, 11.0, INF])
    m = retrieval_metrics(ranks, ks=[1, 10])
    assert m["hr@1"] == pytest.approx(1 / 4)
    assert m["hr@10"] == pytest.approx(2 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11 + 0) / 4)


def test_metrics_k_larger_than_corpus_and_empty() -> None:
    ranks = torch.tensor([2.0, 5.0])  # corpus of 5 items: k = 200 covers everything retrieved
    m = retrieval_metrics(ranks, ks=[200])
    assert m["hr@200"] == 1.0
    assert m["ndcg@200"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / 2)
    assert retrieval_metrics(torch.tensor([]), ks=[10]) == {"hr@10": 0.0, "ndcg@10": 0.0, "mrr": 0.0}


@pytest.mark.parametrize("bad", [torch.tensor([0.0]), torch.tensor([[1.0]])])
def test_metrics_reject_bad_ranks(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="rank"):
        retrieval_metrics(bad, ks=[10])


def test_metrics_reject_bad_cutoff() -> None:
    with pytest.raises(ValueError, match="cutoffs"):
        retrieval_metrics(torch.tensor([1.0]), ks=[0])


def test_ranks_from_topk_and_recall() -> None:
    topk = torch.tensor([[5, 3, 9], [1, 2, 4]])
    assert ranks_from_topk(topk, torch.tensor([9, 7])).tolist() == [3.0, INF]
    assert recall_at_k(torch.tensor([[1, 2, 3]]), torch.tensor([[3, 4, 1]])) == pytest.approx(2 / 3)


def _dense_ranks(scores: torch.Tensor, corpus: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor):
    positions = CorpusPositions(corpus)
    tpos = positions(targets)
    tscores = scores.gather(1, tpos.clamp_min(0)[:, None])[:, 0]
    return target_ranks(
        lambda s, e: scores[:, s:e], corpus.numel(), tpos, tscores, positions(exclude), chunk_size=2
    )


def test_exact_ranks_ties_exclusion_and_absent_targets() -> None:
    corpus = torch.tensor([10, 11, 12, 13, 14])
    scores = torch.tensor(
        [
            [0.9, 0.5, 0.5, 0.1, 0.7],  # target 11 ties with 12 -> pessimistic rank 4 (0.9, 0.7, 0.5 ahead)
            [0.9, 0.5, 0.5, 0.1, 0.7],  # target 11, 10 excluded -> rank 3
            [0.9, 0.5, 0.5, 0.1, 0.7],  # target 99 not in corpus -> inf
            [0.9, 0.5, 0.5, 0.1, 0.7],  # target 14 excluded itself -> inf
            [0.2, 0.2, 0.2, 0.2, 0.2],  # constant scores -> last place
        ]
    )
    targets = torch.tensor([11, 11, 99, 14, 13])
    exclude = torch.tensor([[0, 0], [10, 0], [0, 0], [14, 10], [0, 0]])
    ranks = _dense_ranks(scores, corpus, targets, exclude)
    assert ranks.tolist() == [4.0, 3.0, INF, INF, 5.0]


def test_exact_ranks_match_argsort_on_random_scores() -> None:
    gen = torch.Generator().manual_seed(0)
    corpus = torch.randperm(50, generator=gen)[:30] + 1
    scores = torch.randn(8, 30, generator=gen, dtype=torch.float64)
    targets = corpus[torch.randint(0, 30, (8,), generator=gen)]
    ranks = _dense_ranks(scores, corpus, targets, torch.zeros(8, 1, dtype=torch.int64))
    order = scores.argsort(dim=1, descending=True)
    expected = [(corpus[order[b]] == targets[b]).nonzero()[0, 0].item() + 1 for b in range(8)]
    assert ranks.tolist() == [float(e) for e in expected]


def test_exclusion_mask_chunks() -> None:
    mask = exclusion_mask(torch.tensor([[0, 3, -1], [4, 4, 1]]), start=1, end=4)
    assert mask.tolist() == [[False, False, True], [True, False, False]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metric_sums_on_cuda_equal_cpu() -> None:
    """On CUDA the 1-based check is a device-side assert (no host sync); valid ranks give the CPU sums."""
    ranks = torch.tensor([1.0, 3.0, 12.0, 60.0, float("inf")])
    on_cpu = metric_sums(ranks, (10, 50))
    on_cuda = metric_sums(ranks.cuda(), (10, 50))
    for key, value in on_cpu.items():
        assert on_cuda[key].device.type == "cuda"
        assert on_cuda[key].item() == pytest.approx(value.item(), rel=1e-12), key
