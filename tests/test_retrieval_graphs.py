"""CUDA-graph replay of the approximate indexes' search stage (``cuda_graphs=True``).

On CPU the option must change nothing (eager, one info line) and a failed capture must fall back to eager
calls with a warning; on CUDA the replayed search must return what the eager one returns, for new queries,
exclusions and a second batch shape, and a rebuild must drop the old graphs.
"""

from __future__ import annotations

import logging

import pytest
import torch

from rails.models.similarity.states import DotState
from rails.retrieval import AverageTopK, ClusteredTopK
from rails.retrieval.indexes.graphs import GraphedStage
from tests.test_retrieval_index import NUM_ITEMS, QUERY_DIM, corpus, tiny_mol
from tests.topk_compare import assert_same_topk


def clustered(**kwargs) -> ClusteredTopK:
    return ClusteredTopK(
        num_lists=8,
        num_probes=3,
        num_candidates=40,
        shortlist=6,
        reference_items=64,
        kmeans_iterations=2,
        **kwargs,
    )


def test_cuda_graphs_on_cpu_run_eagerly_with_the_same_results(caplog) -> None:
    head = tiny_mol()
    items, ids, queries = corpus()
    exclude = torch.zeros(5, 2, dtype=torch.int64)
    exclude[1] = ids[3:5]
    for make in (clustered, lambda **kw: AverageTopK(num_candidates=30, **kw)):
        plain = make().build(head, items, ids)
        graphed = make(cuda_graphs=True).build(head, items, ids)
        with caplog.at_level(logging.INFO, logger="rails"):
            for k in (5, NUM_ITEMS):
                scores, out = graphed.search(queries, k, exclude=exclude)
                ref_scores, ref = plain.search(queries, k, exclude=exclude)
                assert_same_topk(scores, out, ref_scores, ref)
        assert graphed._graphed is not None and graphed._graphed.captured == 0
        assert sum("cuda_graphs needs CUDA tensors" in r.getMessage() for r in caplog.records) == 1
        caplog.clear()


def test_a_failed_capture_runs_that_shape_eagerly_with_a_warning(monkeypatch, caplog) -> None:
    calls = []

    def stage(state: DotState, k: int, exclude: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        calls.append(k)
        return (state.vectors.sum(dim=1),)

    def no_stream() -> None:
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    graphed = GraphedStage(stage, "Fake")
    monkeypatch.setattr(torch.cuda, "Stream", no_stream)
    state = DotState(vectors=torch.ones(2, 3))
    with caplog.at_level(logging.WARNING, logger="rails"):
        assert graphed._capture("key", state, 4, None) is None
    assert (
        "Fake: CUDA graph capture failed for batch 2, k 4 (RuntimeError: operation not permitted"
        in caplog.text
    )
    assert "key" in graphed._eager and graphed.captured == 0
    graphed.clear()
    assert not graphed._eager


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_replayed_search_equals_the_eager_search_on_cuda() -> None:
    torch.manual_seed(0)
    head = tiny_mol().cuda()
    items, ids, _ = corpus(num_items=900)
    items, ids = items.cuda(), ids.cuda()
    plain = clustered().build(head, items, ids)
    graphed = clustered(cuda_graphs=True).build(head, items, ids)
    for _ in range(3):  # new queries (and exclusions) each time: the replay must read them
        queries = torch.randn(16, QUERY_DIM, device="cuda")
        exclude = ids[torch.randint(0, 900, (16, 4), device="cuda")]
        scores, out = graphed.search(queries, 10, exclude=exclude)
        ref_scores, ref = plain.search(queries, 10, exclude=exclude)
        assert_same_topk(scores.cpu(), out.cpu(), ref_scores.cpu(), ref.cpu())
        assert graphed.exact_fallback_rows == plain.exact_fallback_rows
    assert graphed._graphed is not None and graphed._graphed.captured == 1
    graphed.search(torch.randn(3, QUERY_DIM, device="cuda"), 10)  # a second shape: a second graph
    assert graphed._graphed.captured == 2
    graphed.build(head, items[:600], ids[:600])  # a rebuild drops the graphs of the old tensors
    assert graphed._graphed.captured == 0
    queries = torch.randn(16, QUERY_DIM, device="cuda")
    scores, out = graphed.search(queries, 10)
    ref_scores, ref = clustered().build(head, items[:600], ids[:600]).search(queries, 10)
    assert_same_topk(scores.cpu(), out.cpu(), ref_scores.cpu(), ref.cpu())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_stage_with_a_host_sync_is_refused_before_any_capture_on_cuda() -> None:
    def stage(state: DotState, k: int, exclude: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        vectors = state.vectors
        return (vectors[vectors[:, 0] > 0].sum(dim=0),)  # a boolean mask: nonzero, a host synchronisation

    graphed = GraphedStage(stage, "Sync")
    state = DotState(vectors=torch.randn(4, 3, device="cuda"))
    (out,) = graphed(state, 1, None)
    assert torch.allclose(out, stage(state, 1, None)[0])
    assert graphed.captured == 0 and len(graphed._eager) == 1
    torch.randn(3, device="cuda")  # CUDA's RNG is not left marked as capturing
