"""Sharded search equals single-process search: in-process shard merge, and two gloo processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rails.models.similarity import DotProductSimilarity
from rails.retrieval import ExactTopK, PerComponentTopK, ShardedIndex
from rails.retrieval.sharded import merge_shard_results, shard_bounds
from tests.test_retrieval_index import corpus, tiny_mol


def test_shard_bounds_cover_corpus_contiguously():
    for num_items, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        bounds = [shard_bounds(num_items, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == num_items
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


@pytest.mark.parametrize("world", [2, 3])
def test_in_process_shard_merge_equals_single(world):
    head = tiny_mol()
    items, ids, queries = corpus()
    items = torch.cat([items, items[:6]])  # duplicated vectors -> exact ties across shards
    ids = torch.cat([ids, torch.arange(2001, 2007)])
    exclude = torch.stack([ids[:3], ids[10:13], torch.zeros(3, dtype=torch.int64), ids[-3:], ids[:3]])
    k = 12
    ref_scores, ref_ids = ExactTopK(chunk_size=8).build(head, items, ids).search(queries, k, exclude=exclude)
    parts_scores, parts_ids = [], []
    for rank in range(world):
        start, end = shard_bounds(ids.numel(), rank, world)
        scores, out = (
            ExactTopK(chunk_size=5)
            .build(head, items[start:end], ids[start:end])
            .search(queries, k, exclude=exclude)
        )
        pad = k - scores.shape[1]
        parts_scores.append(torch.nn.functional.pad(scores, (0, pad), value=-float("inf")))
        parts_ids.append(torch.nn.functional.pad(out, (0, pad), value=0))
    scores, out = merge_shard_results(torch.stack(parts_scores), torch.stack(parts_ids), k)
    assert torch.equal(out, ref_ids)
    torch.testing.assert_close(scores, ref_scores)


def test_sharded_index_without_process_group_is_single_process():
    head = DotProductSimilarity()
    items, ids, queries = corpus()
    scores, out = (
        ShardedIndex(ExactTopK(chunk_size=7)).build(head, items[:, :8], ids).search(queries[:, :8], 5)
    )
    ref_scores, ref = ExactTopK().build(head, items[:, :8], ids).search(queries[:, :8], 5)
    assert torch.equal(out, ref)


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
        assert torch.equal(found, ref_ids)
        torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)
        # approximate per shard: each shard's candidates re-scored exactly, merged like exact
        _, approx = results[rank]["per_component"]
        assert approx.shape == ref_ids.shape and (approx != 0).all()
