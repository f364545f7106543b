"""Sharded search equals single-process search: in-process shard merge, and two gloo processes.

Float results computed in other chunk and shard layouts are compared up to ties (scores within tolerance,
ids equal except among tied scores, :mod:`tests.topk_compare`); the tie order itself is checked bit for bit
on integer-valued vectors, whose dot products are exact in any summation order.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rails.models.similarity import DotProductSimilarity
from rails.retrieval import ExactTopK, PerComponentTopK, ShardedIndex
from rails.retrieval.indexes.sharded import merge_shard_results, shard_bounds
from tests.test_retrieval_index import corpus, tiny_mol
from tests.topk_compare import assert_same_topk


def test_shard_bounds_cover_corpus_contiguously():
    for num_items, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        bounds = [shard_bounds(num_items, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == num_items
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def merged_shards(head, items, ids, queries, k, exclude, world, chunk_size):
    """Search each of ``world`` contiguous shards separately and merge the results in rank order."""
    parts_scores, parts_ids = [], []
    for rank in range(world):
        start, end = shard_bounds(ids.numel(), rank, world)
        index = ExactTopK(chunk_size=chunk_size).build(head, items[start:end], ids[start:end])
        scores, out = index.search(queries, k, exclude=exclude)
        pad = k - scores.shape[1]
        parts_scores.append(torch.nn.functional.pad(scores, (0, pad), value=-float("inf")))
        parts_ids.append(torch.nn.functional.pad(out, (0, pad), value=0))
    return merge_shard_results(torch.stack(parts_scores), torch.stack(parts_ids), k)


@pytest.mark.parametrize("world", [2, 3])
def test_in_process_shard_merge_equals_single(world):
    head = tiny_mol()
    items, ids, queries = corpus()
    items = torch.cat([items, items[:6]])  # duplicated vectors -> ties across shards
    ids = torch.cat([ids, torch.arange(2001, 2007)])
    exclude = torch.stack([ids[:3], ids[10:13], torch.zeros(3, dtype=torch.int64), ids[-3:], ids[:3]])
    k = 12
    ref_scores, ref_ids = ExactTopK(chunk_size=8).build(head, items, ids).search(queries, k, exclude=exclude)
    scores, out = merged_shards(head, items, ids, queries, k, exclude, world, chunk_size=5)
    assert_same_topk(scores, out, ref_scores, ref_ids)
    for row, excluded in zip(out.tolist(), exclude.tolist()):
        assert not set(row) & ({e for e in excluded if e} | {0})


@pytest.mark.parametrize("world", [2, 3])
def test_shard_merge_breaks_exact_ties_by_global_corpus_position(world):
    gen = torch.Generator().manual_seed(4)
    base = torch.randint(-3, 4, (7, 6), generator=gen).float()
    items = base.repeat(4, 1)  # every vector 4 times, spread over the shards: 4-way exact ties
    ids = torch.randperm(500, generator=gen)[:28] + 1
    queries = torch.randint(-3, 4, (5, 6), generator=gen).float()
    head = DotProductSimilarity(normalize=False)  # integer dot products: exact in any summation order
    exclude = torch.stack([ids[:2], ids[9:11], torch.zeros(2, dtype=torch.int64), ids[-2:], ids[3:5]])
    ref_scores, ref_ids = ExactTopK(chunk_size=6).build(head, items, ids).search(queries, 15, exclude=exclude)
    scores, out = merged_shards(head, items, ids, queries, 15, exclude, world, chunk_size=4)
    assert torch.equal(scores, ref_scores) and torch.equal(out, ref_ids)
    position = {i: p for p, i in enumerate(ids.tolist())}
    for row_scores, row_ids in zip(scores.tolist(), out.tolist()):
        for j in range(1, len(row_ids)):
            if row_scores[j] == row_scores[j - 1]:  # within a tie, lower corpus position first
                assert position[row_ids[j]] > position[row_ids[j - 1]]


def test_sharded_index_without_process_group_is_single_process():
    head = DotProductSimilarity()
    items, ids, queries = corpus()
    scores, out = (
        ShardedIndex(ExactTopK(chunk_size=7)).build(head, items[:, :8], ids).search(queries[:, :8], 5)
    )
    ref_scores, ref = ExactTopK().build(head, items[:, :8], ids).search(queries[:, :8], 5)
    assert_same_topk(scores, out, ref_scores, ref)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        head = tiny_mol()
        items, ids, queries = corpus()
        exclude = torch.stack([ids[:2], ids[30:32], torch.zeros(2, dtype=torch.int64), ids[-2:], ids[:2]])
        out = {}
        for name, index in [
            ("exact", ExactTopK(chunk_size=9)),
            ("per_component", PerComponentTopK(k_per_pair=4)),
        ]:
            scores, found = ShardedIndex(index).build(head, items, ids).search(queries, 10, exclude=exclude)
            out[name] = (scores, found)
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_single_process():
    world = 2
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.start_processes(_worker, args=(world, _free_port(), results), nprocs=world, start_method="spawn")
    head = tiny_mol()
    items, ids, queries = corpus()
    exclude = torch.stack([ids[:2], ids[30:32], torch.zeros(2, dtype=torch.int64), ids[-2:], ids[:2]])
    ref_scores, ref_ids = ExactTopK().build(head, items, ids).search(queries, 10, exclude=exclude)
    for rank in range(world):
        scores, found = results[rank]["exact"]
        assert_same_topk(scores, found, ref_scores, ref_ids, msg=f"rank {rank}")
        # approximate per shard: each shard's candidates re-scored exactly, merged like exact
        _, approx = results[rank]["per_component"]
        assert approx.shape == ref_ids.shape and (approx != 0).all()


# ------------------------------------------------------------------------------- the evaluator under DDP
def _evaluator_and_batches(rank: int | None):
    """The evaluator with a sharded, a sharded approximate and a plain exact index; rank r's batches (None: all).

    Rank 0 holds two batches and rank 1 one (a non-padding sampler gives ranks different batch counts), so the
    collective searches must run at epoch end, in lockstep, on the gathered queries.
    """
    from rails.retrieval import NextItemJudge, RetrievalEvaluator
    from tests.test_retrieval_evaluator import next_item_problem

    corpus_ids, table, datamodule, outputs = next_item_problem(seed=3, num_items=23, batches=3, batch=4)
    indexes = {
        "sharded": ShardedIndex(ExactTopK(chunk_size=4)),
        "sharded_pc": ShardedIndex(PerComponentTopK(k_per_pair=1)),
        "exact": ExactTopK(),
    }
    evaluator = RetrievalEvaluator(NextItemJudge(ks=[1, 5]), chunk_size=7, indexes=indexes, index_k=5)
    mine = outputs if rank is None else [outputs[i] for i in ([0, 2] if rank == 0 else [1])]
    return evaluator, table, datamodule, mine


def _evaluator_worker(rank: int, world: int, port: int, results: dict) -> None:
    from tests.test_retrieval_evaluator import FakeModule, FakeTrainer, run_epoch

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        evaluator, table, datamodule, batches = _evaluator_and_batches(rank)
        results[rank] = run_epoch(
            evaluator, FakeTrainer(datamodule), FakeModule(tiny_mol(), table), batches, "test"
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_evaluator_with_sharded_index_under_two_gloo_processes_equals_one_process():
    from tests.test_retrieval_evaluator import FakeModule, FakeTrainer, run_epoch

    world = 2
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.start_processes(
        _evaluator_worker, args=(world, _free_port(), results), nprocs=world, start_method="spawn"
    )
    evaluator, table, datamodule, batches = _evaluator_and_batches(None)
    single = run_epoch(evaluator, FakeTrainer(datamodule), FakeModule(tiny_mol(), table), batches, "test")
    for rank in range(world):
        logged = results[rank]
        assert set(logged) == set(single), rank
        for key, value in single.items():
            if key.endswith("latency_ms") or key.startswith("test/sharded_pc/"):
                continue  # timings; per-shard candidates differ from single-corpus ones
            assert logged[key] == pytest.approx(value, abs=1e-9), (rank, key)
        # the sharded exact index equals the exact ranking and the exact top-k on every rank
        assert logged["test/sharded/recall@5"] == pytest.approx(1.0)
        assert logged["test/sharded/hr@5"] == pytest.approx(single["test/hr@5"])
        assert 0.0 <= logged["test/sharded_pc/exact_fallback_rate"] <= 1.0
        assert 0.0 < logged["test/sharded_pc/recall@5"] <= 1.0
    for key in single:  # all-reduced: every rank logs the same values
        if not key.endswith("latency_ms"):
            assert results[0][key] == pytest.approx(results[1][key], abs=1e-12), key
