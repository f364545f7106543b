"""ClusteredTopK (IVF candidates probed by exact MoL) and its inverted lists, on tiny CPU corpora.

Full probes must equal the exact index up to ties; small budgets must return valid, exactly scored,
exclusion-respecting results; on a clustered corpus the recall must be far above what scanning the same
number of random lists could reach.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from rails.config import check_config
from rails.models.similarity import DotProductSimilarity
from rails.retrieval import AverageTopK, ClusteredTopK, ExactTopK, RetrievalEvaluator
from rails.retrieval import benchmark_data as data
from rails.retrieval.benchmark_grid import CLUSTERED_FULL_GRID_MAX_ITEMS, index_grid
from rails.retrieval.indexes.inverted_lists import InvertedLists, kmeans
from rails.retrieval.metrics import recall_at_k
from rails.train import run
from tests.conftest import TINY_OVERRIDES, compose_config, shrink
from tests.test_retrieval_callback import MOL_TINY
from tests.test_retrieval_index import NUM_ITEMS, QUERY_DIM, assert_exact_scored_results, corpus, tiny_mol
from tests.topk_compare import assert_same_topk


def full_probe(**kwargs) -> ClusteredTopK:
    return ClusteredTopK(
        num_lists=6, num_probes=100, num_candidates=10_000, representatives=2, kmeans_iterations=3, **kwargs
    )


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_full_probe_equals_exact(dtype):
    head = tiny_mol()
    items, ids, queries = corpus()
    exclude = torch.zeros(5, 4, dtype=torch.int64)
    exclude[0, :2] = ids[5:7]
    exclude[3, :4] = ids[:4]
    index = full_probe(dtype=dtype).build(head, items, ids)
    exact = ExactTopK(chunk_size=16).build(head, items, ids)
    for k in (1, 10, NUM_ITEMS):
        scores, out = index.search(queries, k, exclude=exclude)
        ref_scores, ref_ids = exact.search(queries, k, exclude=exclude)
        assert_same_topk(scores, out, ref_scores, ref_ids)
        assert index.exact_fallback_rows == 0


def test_small_budget_results_are_valid_sorted_and_exactly_scored():
    head = tiny_mol()
    items, ids, queries = corpus(num_items=300)
    exclude = torch.zeros(5, 3, dtype=torch.int64)
    exclude[:, 0] = ids[0]
    exclude[2, 1:] = ids[1:3]
    index = ClusteredTopK(
        num_lists=10, num_probes=3, num_candidates=20, shortlist=5, reference_items=50, kmeans_iterations=2
    ).build(head, items, ids)
    scores, out = index.search(queries, 8, exclude=exclude)
    assert_exact_scored_results(head, items, ids, queries, exclude, scores, out, 8)


def test_excluded_candidates_fall_back_to_exact_and_are_counted():
    head = tiny_mol()
    items, ids, queries = corpus()
    index = ClusteredTopK(num_lists=8, num_probes=1, num_candidates=3, kmeans_iterations=2).build(
        head, items, ids
    )
    exclude = ids[None, :50].expand(5, -1)  # 7 items left: one probed list cannot hold 10 valid ones
    scores, out = index.search(queries, 10, exclude=exclude)
    ref_scores, ref = ExactTopK().build(head, items, ids).search(queries, 10, exclude=exclude)
    assert index.exact_fallback_rows == 5 and index.exact_fallback.all()
    assert_same_topk(scores, out, ref_scores, ref)
    assert (out[:, 7:] == 0).all() and not set(out.flatten().tolist()) & set(ids[:50].tolist())


def test_k_above_corpus_is_padded():
    head = tiny_mol()
    items, ids, queries = corpus()
    scores, out = full_probe().build(head, items, ids).search(queries, NUM_ITEMS + 10)
    assert out.shape == (5, NUM_ITEMS) and torch.isfinite(scores).all()


def test_recall_on_a_clustered_corpus_beats_random_lists_and_averaging():
    settings = data.SyntheticSettings(width=16, hidden=16, clusters=64, train_steps=200, train_batch=64)
    problem = data.synthetic_problem("structured", "4x2x16", 10_000, settings, torch.float32, "cpu", 16)
    head, state = problem.head, problem.item_state
    queries = head.encode_queries(problem.queries)
    _, truth = ExactTopK().build(head, item_state=state).search_state(queries, 50)
    index = ClusteredTopK(num_lists=128, num_probes=12, num_candidates=400, shortlist=32, kmeans_iterations=4)
    _, ids = index.build(head, item_state=state).search_state(queries, 50)
    _, averaged = AverageTopK(num_candidates=400).build(head, item_state=state).search_state(queries, 50)
    lists = index.clustered.lists
    assert lists is not None
    scanned = 12 * lists.list_size / 10_000  # corpus share of the slots read per query (random lists: ~it)
    recall = recall_at_k(ids, truth)
    assert scanned < 0.2 and recall >= 0.8, (scanned, recall)  # measured 0.19, 0.91
    assert recall >= recall_at_k(averaged, truth) + 0.15  # AverageTopK at the same budget: 0.61
    assert index.exact_fallback_rows == 0


def test_inverted_lists_hold_every_item_once():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(500, 6, generator=gen)
    centroids, labels = kmeans(keys, 7, iterations=3, sample_size=200, seed=1)
    assert centroids.shape == (7, 6) and labels.shape == (500,) and int(labels.max()) < 7
    lists = InvertedLists(keys, labels, 7, list_size=40)
    members = lists.members[lists.members >= 0]
    assert torch.equal(members.sort().values, torch.arange(500))
    assert lists.members.shape[1] == 40 and int(lists.fill.min()) >= 1
    for row, fill in zip(lists.members.tolist(), lists.fill.tolist()):
        assert len({int(labels[p]) for p in row[:fill]}) == 1 and all(p == -1 for p in row[fill:])
    assert lists.keys is keys  # same dtype: the lists read the corpus keys, no copy
    assert (
        InvertedLists(keys, labels, 7, 40, torch.bfloat16).keys.dtype == torch.bfloat16
    )  # one converted copy
    means = torch.stack(
        [keys[row[:fill]].mean(dim=0) for row, fill in zip(lists.members, lists.fill.tolist())]
    )
    torch.testing.assert_close(lists.centroids, means)
    reps = lists.representatives(3)
    assert reps.shape == (lists.num_lists, 3)
    assert all(set(r) <= set(m) for r, m in zip(reps.tolist(), lists.members.tolist()))
    probes = torch.arange(lists.num_lists).expand(2, -1)
    found = lists.scan(torch.randn(2, 6, generator=gen), probes, 500)
    assert torch.equal(found.sort(dim=1).values, torch.arange(500).expand(2, -1))


def test_bad_arguments_and_heads_are_rejected():
    keys = ("num_probes", "num_candidates", "representatives", "weight_top", "num_lists", "shortlist")
    for key in (*keys, "reference_items"):
        with pytest.raises(ValueError, match=key):
            ClusteredTopK(**{key: 0})
    with pytest.raises(ValueError, match="list_size_factor"):
        ClusteredTopK(list_size_factor=0.5)
    with pytest.raises(ValueError, match="dtype"):
        ClusteredTopK(dtype="int8")
    items, ids, _ = corpus()
    with pytest.raises(ValueError, match="components"):
        ClusteredTopK().build(DotProductSimilarity(), items[:, :8], ids)
    with pytest.raises(RuntimeError, match="build"):
        ClusteredTopK().search(torch.randn(2, QUERY_DIM), 3)


def test_mol_ivf_config_composes_and_instantiates(tmp_path: Path):
    cfg = shrink(compose_config("train", [*TINY_OVERRIDES, "retrieval=mol_ivf"]), tmp_path)
    check_config(cfg)
    evaluator = hydra.utils.instantiate(cfg.retrieval.evaluator)
    GlobalHydra.instance().clear()
    assert isinstance(evaluator, RetrievalEvaluator) and set(evaluator.indexes) == {"ivf"}
    index = evaluator.indexes["ivf"]
    assert isinstance(index, ClusteredTopK)
    assert (index.clustered.num_probes, index.clustered.num_candidates) == (16, 2000)
    assert index.clustered.dtype == torch.bfloat16 and index.clustered.num_lists is None
    assert (index.clustered.shortlist, index.clustered.representatives) == (128, 8)


def test_training_run_logs_ivf_metrics_and_full_probe_is_exact(tmp_path: Path):
    overrides = [
        *TINY_OVERRIDES,
        *MOL_TINY,
        "retrieval=mol_ivf",
        "retrieval.evaluator.index_k=20",
        "retrieval.evaluator.indexes.ivf.num_lists=8",
        "retrieval.evaluator.indexes.ivf.num_probes=8",  # every list, every member: exact up to ties
        "retrieval.evaluator.indexes.ivf.num_candidates=1000",
        "retrieval.evaluator.judge.ks=[10,50]",
    ]
    metrics = run(shrink(compose_config("train", overrides), tmp_path))
    GlobalHydra.instance().clear()
    for key in ("hr@10", "ndcg@10", "mrr", "recall@20", "exact_fallback_rate", "latency_ms"):
        assert f"test/ivf/{key}" in metrics and f"val/ivf/{key}" in metrics, key
    assert metrics["test/ivf/recall@20"] == pytest.approx(1.0, abs=0.01)  # one near-tie flip allowed
    assert metrics["test/ivf/exact_fallback_rate"] == 0.0


def test_bench_grid_has_every_clustered_row_up_to_its_corpus_cap_and_one_above():
    cpu = torch.device("cpu")
    rows = [
        n
        for n, _, _ in index_grid(False, cpu, with_faiss=False, num_items=10_000_000)
        if n == "ClusteredTopK"
    ]
    assert len(rows) >= 5
    params = [p for n, p, _ in index_grid(False, cpu, False, 10_000_000) if n == "ClusteredTopK"]
    assert "num_lists=10000,shortlist=128,num_probes=16,num_candidates=2000" in params
    large = CLUSTERED_FULL_GRID_MAX_ITEMS + 1
    assert not [n for n, _, _ in index_grid(False, cpu, False, large) if n.startswith("ClusteredTopK")]
    large_cuda = [(n, p) for n, p, _ in index_grid(False, torch.device("cuda"), False, 100_000_000)]
    assert [p for n, p in large_cuda if n.startswith("ClusteredTopK")] == [
        "num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000",
        "num_lists=100000,shortlist=1024,num_probes=256,num_candidates=8000",
    ]  # the replayed large-corpus points above the full grid
    assert not [n for n, _, _ in index_grid(False, cpu, False, 10_000_000) if n.endswith("+graphs")]
    cuda = [(n, p) for n, p, _ in index_grid(False, torch.device("cuda"), False, 10_000_000)]  # no CUDA call
    replayed = [p for n, p in cuda if n == "ClusteredTopK+graphs"]
    assert "num_lists=10000,shortlist=256,num_probes=48,num_candidates=4000" in replayed  # graphs only
    assert "num_lists=10000,shortlist=256,num_probes=48,num_candidates=4000" not in params
    assert ("AverageTopK+graphs", "num_candidates=4000") in cuda


def test_recall_losses_split_the_misses_between_probing_and_candidate_ranking():
    head = tiny_mol()
    items, ids, queries = corpus(num_items=300)
    exact = ExactTopK().build(head, items, ids)
    _, truth_ids = exact.search(queries, 10)
    position_of = {int(i): p for p, i in enumerate(ids.tolist())}
    truth = torch.tensor([[position_of[int(i)] for i in row] for row in truth_ids])
    state = head.encode_queries(queries)
    full = full_probe().build(head, items, ids)
    assert full.recall_losses(state, truth) == {"probed": 1.0, "candidates": 1.0}
    small = ClusteredTopK(
        num_lists=10, num_probes=2, num_candidates=12, shortlist=5, reference_items=50, kmeans_iterations=2
    ).build(head, items, ids)
    losses = small.recall_losses(state, truth)
    _, found = small.search(queries, 10)
    assert 0 < losses["candidates"] <= losses["probed"] < 1
    assert losses["candidates"] == pytest.approx(recall_at_k(found, truth_ids))  # re-scoring keeps them all


def test_probe_weights_accept_the_bf16_states_of_an_autocast_head():
    """A head trained with ``autocast_bf16`` hands out bf16 states; its gating Linears stay float32."""
    from rails.retrieval.indexes.clustered import mol_pair_weights

    head = tiny_mol()
    items, _, queries = corpus()
    with torch.no_grad():
        query_state, item_state = head.encode_queries(queries), head.encode_items(items[:12])
        paired = item_state.gather(torch.arange(12).view(3, 4).repeat(2, 1)[:5])  # (B=5, N=4) items per query
        weights = mol_pair_weights(head, query_state, paired)
        bf16 = mol_pair_weights(head, query_state.to(torch.bfloat16), paired.to(torch.bfloat16))
    assert weights.shape == bf16.shape == (5, 4, 6) and bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, weights, rtol=0, atol=0.05)  # bf16 rounding of the inputs only
