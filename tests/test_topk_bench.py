"""The top-k benchmark (rails.retrieval.benchmark, scripts/bench_topk.py): the CPU --tiny run writes its
tables, the roofline arithmetic, the structured synthetic data (the head learns it), the checkpoint problem,
and the fused tile settings as public index arguments."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rails.retrieval import benchmark as bench
from rails.retrieval import benchmark_data as data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_topk.py"


def test_roofline_floor_of_the_acceptance_setting():
    floor_ms, nbytes, flops = bench.roofline(8, 4, 64, 128, 10_000_000, 32, "NVIDIA H100 80GB HBM3")
    assert nbytes == pytest.approx(10_000_000 * (4 * 64 + 32) * 2)
    assert flops == pytest.approx(32 * 10_000_000 * (2 * 32 * 64 + 4 * 32 * 128 + 8 * 32))
    assert floor_ms == pytest.approx(1000 * flops / 989.4e12)  # compute-bound at B = 32


def test_clustered_items_and_two_interest_queries():
    items = data.clustered_items(500, 16, clusters=4, spread=0.3, seed=0, device="cpu")
    assert items.shape == (500, 16) and torch.allclose(items.norm(dim=1), torch.ones(500))
    # 4 tight clusters: every item is close to many others (cosine > 0.8 with >= 50 items)
    assert ((items @ items.T) > 0.8).sum(dim=1).min() >= 50
    queries, positives = data.two_interest_queries(items, 7, noise=0.1, gen=torch.Generator().manual_seed(0))
    assert queries.shape == (7, 16) and positives.shape == (7, 2)
    expected = torch.nn.functional.normalize(items[positives].sum(dim=1), dim=1)
    assert ((queries * expected).sum(dim=1) > 0.95).all()


def test_training_the_synthetic_head_lowers_its_loss():
    torch.manual_seed(0)
    items = data.clustered_items(400, 16, clusters=8, spread=0.5, seed=0, device="cpu")
    head = data.make_head(2, 2, 8, 16, 16, torch.device("cpu"))
    before = data.train_head(head, items, steps=1, batch=32, noise=0.2, seed=1)
    after = data.train_head(head, items, steps=40, batch=32, noise=0.2, seed=1)
    assert not head.training and after < 0.8 * before


def test_checkpoint_problem_rebuilds_head_and_item_table(tmp_path: Path):
    from rails.models.similarity.mol import MoLSimilarity

    kwargs = {"query_dim": 12, "item_dim": 12, "num_query_components": 2, "num_item_components": 2}
    kwargs |= {"component_dim": 8, "query_hidden_dim": 16, "gating_qi_hidden_dim": 16}
    torch.manual_seed(3)
    head = MoLSimilarity(**kwargs).eval()
    table = torch.randn(31, 12)
    state = {f"similarity.{k}": v for k, v in head.state_dict().items()} | {"items.table.weight": table}
    node = {"_target_": "rails.models.similarity.mol.MoLSimilarity", **kwargs}
    checkpoint = {"rails_config": {"model": {"similarity": node}}, "state_dict": state}
    problem = data.checkpoint_problem(checkpoint, num_items=45, noise=0.1, dtype=torch.float32, device="cpu")
    assert problem.item_state.components.shape == (45, 2, 8)  # 30 real rows tiled to 45
    expected = head.encode_items(table[1:])
    torch.testing.assert_close(problem.item_state.components[:30], expected.components)
    torch.testing.assert_close(problem.item_state.components[30:], expected.components[:15])
    assert problem.queries(5, 0).shape == (5, 12)
    foreign = {"rails_config": {"model": {"similarity": {"_target_": "x.Dot"}}}, "state_dict": {}}
    with pytest.raises(ValueError, match="not a MoLSimilarity"):
        data.checkpoint_problem(foreign, num_items=4, noise=0.1, dtype=torch.float32, device="cpu")


def test_parse_fused_config():
    config = bench.parse_fused_config("128x264")
    assert (config.block_x, config.num_splits) == (128, 264)
    index = config.index()  # the public tile arguments of the exact index
    assert (index.fused, index.fused_block_x, index.fused_num_splits) == (True, 128, 264)
    assert bench.parse_fused_config("64").num_splits is None
    for bad in ("8x32x4", "x", ""):
        with pytest.raises(ValueError, match="fused configs"):
            bench.parse_fused_config(bad)


def test_bench_problem_rows_on_a_tiny_corpus(tmp_path: Path):
    settings = data.SyntheticSettings(width=8, hidden=8, clusters=4, train_steps=2, train_batch=16)
    problem = data.synthetic_problem("structured", "2x2x4", 300, settings, torch.float32, "cpu")
    run = bench.BenchSettings(batch_sizes=[3], k=10, warmup=0, runs=1, tiny=True)
    rows = bench.bench_problem(problem, "2x2x4", 300, run, torch.device("cpu"), "CPU", with_faiss=False)
    names = [row.index for row in rows]
    assert names[0] == "reference_torch_chunked" and {
        "PerComponentTopK",
        "AverageTopK",
        "CombinedTopK",
    } <= set(names)
    assert rows[0].recall == 1.0 and all(0.0 <= row.recall <= 1.0 for row in rows)
    per_pair = next(row for row in rows if row.params == "k_per_pair=1")
    assert per_pair.fallback_rows == 3  # 4 pairs x 1 candidate < k = 10: every query answered exactly
    bench.write_results(rows, tmp_path, "CPU")
    written = json.loads((tmp_path / "bench_topk.json").read_text())["rows"]
    assert [row["index"] for row in written] == names


@pytest.mark.slow
def test_tiny_run_writes_markdown_json_csv(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--data", "structured", "random", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "bench_topk.json").read_text())["rows"]
    names = {row["index"] for row in rows}
    assert {"reference_torch_chunked", "PerComponentTopK", "AverageTopK", "CombinedTopK"} <= names
    assert {row["data"] for row in rows} == {"structured", "random"}
    assert all(0.0 <= row["recall"] <= 1.0 and row["latency_ms"] > 0 for row in rows)
    assert all(row["recall"] == 1.0 for row in rows if row["index"] == "reference_torch_chunked")
    assert all(math.isnan(row["speedup_vs_fused"]) for row in rows)  # CPU: no fused row
    assert "| data | setting |" in (tmp_path / "bench_topk.md").read_text()
    assert (tmp_path / "bench_topk.csv").read_text().startswith("device,")


def test_checkpoint_data_needs_a_path(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--data", "checkpoint", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--checkpoint PATH" in proc.stderr
