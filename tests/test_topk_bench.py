"""The top-k benchmark library (rails.retrieval.benchmark*): the plain brute-force baseline and the fp32 / float64
ground truth, the roofline, the chunked bf16 problems, and a tiny run's rows and files (JSON keys, markdown, PNG).
CPU only, tiny corpora."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rails.retrieval import benchmark as bench
from rails.retrieval import benchmark_data as data
from rails.retrieval import benchmark_exact as exact
from rails.retrieval import benchmark_report as report
from rails.retrieval.benchmark_checkpoint import checkpoint_problem
from rails.retrieval.indexes import ExactTopK
from rails.retrieval.metrics import recall_at_k
from rails.runs.rebuild import trained_test_queries

GIVEN = bench.Peaks(tflops=800.0, gbps=4000.0, source="given")


def tiny_problem(num_items: int = 300, dtype: torch.dtype = torch.float32) -> data.Problem:
    settings = data.SyntheticSettings(width=8, hidden=8, clusters=4, train_steps=2, train_batch=16)
    return data.synthetic_problem("structured", "2x2x4", num_items, settings, dtype, "cpu", num_queries=6)


def test_roofline_floor_at_given_rates():
    floor_ms, nbytes, flops = bench.roofline(8, 4, 64, 128, 10_000_000, 32, GIVEN)
    assert nbytes == pytest.approx(10_000_000 * (4 * 64 + 32) * 2)
    assert flops == pytest.approx(32 * 10_000_000 * (2 * 32 * 64 + 4 * 32 * 128 + 8 * 32))
    assert floor_ms == pytest.approx(1000 * flops / 800e12)  # compute-bound at B = 32
    floor_b1, _, _ = bench.roofline(8, 4, 64, 128, 10_000_000, 1, GIVEN)
    assert floor_b1 == pytest.approx(1000 * nbytes / 4000e9)  # memory-bound at B = 1


def test_measure_peaks_given_or_measured():
    assert bench.measure_peaks(torch.device("cpu"), 1.0, 2.0) == bench.Peaks(1.0, 2.0, "given")
    measured = bench.measure_peaks(torch.device("cpu"), tflops=5.0)
    assert measured.tflops == 5.0 and measured.gbps > 0 and measured.source.startswith("measured")


def test_time_call_stops_at_its_budget():
    calls = []
    times, result = bench.time_call(lambda: calls.append(1) or len(calls), 2, 1000, torch.device("cpu"), 0.0)
    assert len(times) == 1 and len(calls) == 2 and result == 2  # one warm-up (budget spent), one timed run


def test_time_call_times_after_a_slow_warm_up():
    """A first call that autotunes (slow) spends the warm-up clock only: the timed runs keep their own budget."""
    calls = []

    def call() -> int:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.3)  # the autotuning first call
        return len(calls)

    times, result = bench.time_call(call, 3, 4, torch.device("cpu"), 0.2)
    assert (
        len(calls) == 5 and len(times) == 4 and result == 5
    )  # one warm-up (its half-budget spent), four timed


def test_mol_scores_match_the_head():
    problem = tiny_problem()
    head, items = problem.head, problem.item_state
    queries = head.encode_queries(problem.queries[:3])
    expected = head.score(queries, items.index(slice(0, 50)))
    got = exact.mol_scores(head.mixing(), queries, items.index(slice(0, 50)), torch.float32)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_plain_bruteforce_and_fp32_truth_agree_with_the_exact_index():
    problem = tiny_problem()
    head, items = problem.head, problem.item_state
    queries = head.encode_queries(problem.queries)
    truth_scores, truth = exact.exact_topk(head, queries, items, 10, torch.float32, chunk_size=37)
    index = ExactTopK(fused=False).build(head, item_state=items)
    ref_scores, ref_ids = index.search_state(queries, 10)
    torch.testing.assert_close(truth_scores, ref_scores, atol=1e-4, rtol=1e-4)
    assert recall_at_k(truth + 1, ref_ids) >= 0.95
    for chunk in (7, 1000):  # bf16 baseline, chunked or not: close to the fp32 truth
        scores, positions = exact.plain_bruteforce_topk(head, queries, items, 10, chunk_size=chunk)
        assert scores.shape == positions.shape == (6, 10)
        assert recall_at_k(positions, truth) >= 0.8
        torch.testing.assert_close(scores, truth_scores, atol=0.1, rtol=0.02)


def test_chunk_items_bounds_the_intermediate():
    head = tiny_problem().head  # P = 4, H = 8
    assert exact.chunk_items(head, batch=4, chunk_size=1000, max_elements=320) == 10  # 4 * 10 * 8 = 320
    assert exact.chunk_items(head, batch=4, chunk_size=5, max_elements=10**9) == 5
    with pytest.raises(ValueError, match="chunk_size"):
        exact.chunk_items(head, batch=4, chunk_size=0, max_elements=10)


def test_float64_check_accepts_the_truth_and_flags_a_wrong_id():
    problem = tiny_problem()
    head, items = problem.head, problem.item_state
    queries = head.encode_queries(problem.queries[:2])
    scores, positions = exact.exact_topk(head, queries, items, 10)
    check = exact.float64_check(head, queries, items, scores, positions, chunk_size=64)
    assert check["ids_agree_up_to_ties"] and check["id_agreement"] == 1.0
    assert 0.0 <= check["max_abs_score_diff"] < 1e-3
    _, worst = exact.exact_topk(head, queries, items, len(items))
    wrong = positions.clone()
    wrong[0, 0] = worst[0, -1]  # the lowest-scored item in place of the best one
    bad = exact.float64_check(head, queries, items, scores, wrong, chunk_size=64)
    assert not bad["ids_agree_up_to_ties"] and bad["id_agreement"] < 1.0


def test_clustered_items_and_two_interest_queries():
    items = data.clustered_items(500, 16, clusters=4, spread=0.3, seed=0, device="cpu")
    assert items.shape == (500, 16) and torch.allclose(items.norm(dim=1), torch.ones(500))
    # 4 tight clusters: every item is close to many others (cosine > 0.8 with >= 50 items)
    assert ((items @ items.T) > 0.8).sum(dim=1).min() >= 50
    queries, positives = data.two_interest_queries(items, 7, noise=0.1, gen=torch.Generator().manual_seed(0))
    assert queries.shape == (7, 16) and positives.shape == (7, 2)
    expected = torch.nn.functional.normalize(items[positives].sum(dim=1), dim=1)
    assert ((queries * expected).sum(dim=1) > 0.95).all()


def test_corpus_state_is_written_chunk_by_chunk_in_the_target_dtype():
    head = data.make_head(2, 2, 4, 8, 8, torch.device("cpu"))
    items = torch.randn(25, 8)
    state = data.corpus_state(head, iter(items.split(10)), 25, torch.bfloat16)
    assert state.components.dtype == state.gate.dtype == torch.bfloat16 and len(state) == 25
    expected = head.encode_items(items)
    torch.testing.assert_close(state.components.float(), expected.components, atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="expected num_items=30"):
        data.corpus_state(head, iter(items.split(10)), 30, torch.bfloat16)


def test_structured_problem_stores_bf16_and_queries_mix_corpus_items():
    problem = tiny_problem(num_items=200, dtype=torch.bfloat16)
    assert problem.item_state.components.dtype == torch.bfloat16 and len(problem.item_state) == 200
    assert problem.queries.shape == (6, 8) and problem.setting == "2x2x4"
    assert torch.allclose(problem.queries.norm(dim=1), torch.ones(6))


def test_training_the_synthetic_head_lowers_its_loss():
    torch.manual_seed(0)
    items = data.clustered_items(400, 16, clusters=8, spread=0.5, seed=0, device="cpu")
    head = data.make_head(2, 2, 8, 16, 16, torch.device("cpu"))
    before = data.train_head(head, items, steps=1, batch=32, noise=0.2, seed=1)
    after = data.train_head(head, items, steps=40, batch=32, noise=0.2, seed=1)
    assert not head.training and after < 0.8 * before


def tiny_mol_checkpoint(rows: int) -> tuple[dict, torch.nn.Module, torch.Tensor]:
    """(checkpoint, head, item table): a tiny MoL head and a (rows, 12) item table, as checkpoint_problem reads them."""
    from rails.models.similarity.mol import MoLSimilarity

    kwargs = {"query_dim": 12, "item_dim": 12, "num_query_components": 2, "num_item_components": 2}
    kwargs |= {"component_dim": 8, "query_hidden_dim": 16, "gating_qi_hidden_dim": 16}
    torch.manual_seed(3)
    head = MoLSimilarity(**kwargs).eval()
    table = torch.randn(rows, 12)
    state = {f"similarity.{k}": v for k, v in head.state_dict().items()} | {"items.table.weight": table}
    node = {"_target_": "rails.models.similarity.mol.MoLSimilarity", **kwargs}
    return {"rails_config": {"model": {"similarity": node}}, "state_dict": state}, head, table


def test_checkpoint_problem_rebuilds_head_and_item_table():
    checkpoint, head, table = tiny_mol_checkpoint(31)
    own = checkpoint_problem(checkpoint, None, 0.1, torch.float32, "cpu", num_queries=5)
    assert own.item_state.components.shape == (30, 2, 8) and own.queries.shape == (5, 12)  # row 0 = padding
    problem = checkpoint_problem(checkpoint, 45, 0.1, torch.float32, "cpu", num_queries=5)
    expected = head.encode_items(table[1:])
    torch.testing.assert_close(problem.item_state.components[:30], expected.components)
    torch.testing.assert_close(problem.item_state.components[30:], expected.components[:15])
    foreign = {"rails_config": {"model": {"similarity": {"_target_": "x.Dot"}}}, "state_dict": {}}
    with pytest.raises(ValueError, match="not a MoLSimilarity"):
        checkpoint_problem(foreign, 4, 0.1, torch.float32, "cpu")


def test_checkpoint_of_a_blend_run_gives_its_mol_head():
    """A run ranked by MoL + cosine (model/similarity_blend=cosine) is searched and gated by its MoL part."""
    checkpoint, head, table = tiny_mol_checkpoint(21)
    node = checkpoint["rails_config"]["model"]["similarity"]
    node |= {"_target_": "rails.models.similarity.mol_cosine.MoLWithCosine", "cosine_weight": 0.5}
    node |= {"mol_weight": 1.0, "cosine_temperature": 0.05}
    problem = checkpoint_problem(checkpoint, None, 0.1, torch.float32, "cpu", num_queries=4)
    assert type(problem.head).__name__ == "MoLSimilarity"
    torch.testing.assert_close(problem.item_state.components, head.encode_items(table[1:]).components)


def test_checkpoint_problem_queries_come_from_the_runs_test_users(tmp_path: Path):
    """With the run's data, queries are the trained encoder's test-user embeddings (and their user ids)."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from rails.batch import collate_sequences
    from tests.conftest import TINY_OVERRIDES, build_model_and_loader, compose_config, shrink

    overrides = [*TINY_OVERRIDES, "model/similarity=mol", "model.similarity.uid_hash_sizes=[50]"]
    overrides += ["model.similarity.query_hidden_dim=16", "model.similarity.component_dim=8"]
    cfg = shrink(compose_config("train", overrides), tmp_path)
    GlobalHydra.instance().clear()
    model, _ = build_model_and_loader(cfg)
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored.pop("hydra")
    num_items = model.items.num_items
    checkpoint = {
        "rails_config": stored,
        "state_dict": model.state_dict(),
        "hyper_parameters": {"num_items": num_items},
    }
    root = cfg.data.root
    users = trained_test_queries(checkpoint, root, 40, "cpu", "ckpt")
    problem = checkpoint_problem(
        checkpoint, None, 0.1, torch.float32, "cpu", num_queries=40, user_queries=users
    )
    assert problem.queries_from.startswith("test users") and problem.queries.shape == (40, 16)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    batch = collate_sequences([datamodule.test_dataloader().dataset[i] for i in range(40)])
    model.eval()
    with torch.no_grad():
        expected = model.embed_queries(batch)
    torch.testing.assert_close(problem.queries, expected)
    assert torch.equal(problem.user_ids, batch.user_ids)
    assert problem.encode(5).components.shape == (5, 8, 8)  # the uid head needs the user ids: they are there
    proxy = checkpoint_problem(checkpoint, None, 0.1, torch.float32, "cpu", num_queries=6)
    assert proxy.queries_from.startswith("random items") and proxy.user_ids.shape == (6,)
    assert proxy.encode(6).components.shape == (6, 8, 8)
    with pytest.raises(ValueError, match="fewer than the 100000 queries"):
        trained_test_queries(checkpoint, root, 100000, "cpu", "ckpt")
    no_size = {**checkpoint, "hyper_parameters": {}}
    with pytest.raises(ValueError, match="no hyper_parameters.num_items"):
        trained_test_queries(no_size, root, 4, "cpu", "ckpt")


def test_parse_fused_config():
    config = bench.parse_fused_config("128x264")
    assert (config.block_x, config.num_splits) == (128, 264)
    index = config.index()  # the public tile arguments of the exact index
    assert (index.fused, index.fused_block_x, index.fused_num_splits) == (True, 128, 264)
    assert bench.parse_fused_config("64").num_splits is None
    config = bench.parse_fused_config("16x528:8")
    assert (config.block_x, config.num_splits, config.block_q) == (16, 528, 8)
    assert config.index().fused_block_q == 8
    for bad in ("8x32x4", "x", "", "16:q"):
        with pytest.raises(ValueError, match="fused configs"):
            bench.parse_fused_config(bad)


def test_parse_batch_sizes_at():
    assert bench.parse_batch_sizes_at(["100000000:32", "10:1,8"]) == {100_000_000: [32], 10: [1, 8]}
    for bad in ("100", "1:x", "5:0"):
        with pytest.raises(ValueError, match=repr(bad)):
            bench.parse_batch_sizes_at([bad])


def test_tiny_run_rows_json_markdown_and_png(tmp_path: Path):
    problem = tiny_problem()
    run = bench.BenchSettings(
        batch_sizes=[3],
        k=10,
        warmup=0,
        runs=1,
        tiny=True,
        truth_queries=4,
        check_queries=1,
        slow_max_items=100,
    )
    cpu = torch.device("cpu")
    rows, record = bench.bench_problem(problem, run, cpu, "CPU", GIVEN, with_faiss=False)
    names = [row.index for row in rows]
    assert names[:2] == [bench.PLAIN, "reference_torch_chunked"]
    assert {"PerComponentTopK", "AverageTopK", "CombinedTopK", "ClusteredTopK"} <= set(names)
    plain = rows[0]
    assert plain.speedup_vs_plain == pytest.approx(1.0) and plain.recall is None
    assert "timed on the first 100 items" in plain.note  # 300 items > slow_max_items: scaled, no recall
    approx = [row for row in rows if row.index not in (bench.PLAIN, "reference_torch_chunked")]
    assert all(0.0 <= row.recall <= 1.0 and row.recall_queries == 3 for row in approx)
    assert all(row.speedup_vs_plain == pytest.approx(plain.latency_ms / row.latency_ms) for row in approx)
    per_pair = next(row for row in rows if row.params == "k_per_pair=1")
    assert per_pair.exact_fallback_rows == 3 and per_pair.recall == 1.0  # 4 candidates < k: exact fallback
    assert record["float64_check"]["ids_agree_up_to_ties"] and record["truth"]["queries"] == 4
    for row in (row for row in rows if row.index == "ClusteredTopK"):  # where its recall is lost, in the note
        found = re.search(r"true top-k in the probed lists ([0-9.]+), in the candidates ([0-9.]+)", row.note)
        assert found, row.note
        probed, kept = float(found[1]), float(found[2])
        assert kept <= probed <= 1.0 and kept == pytest.approx(row.recall, abs=1e-4)

    meta = {
        "gpu": "CPU",
        "torch": torch.__version__,
        "date": "today",
        "command": "python scripts/bench_topk.py",
    }
    meta |= {"peaks": vars(GIVEN), "settings": {"k": 10, "runs": 1, "time_budget_s": 3.0}}
    report.write_results(report.results_record(rows, [record], meta), tmp_path)
    written = json.loads((tmp_path / "bench_topk.json").read_text())
    required = {
        "index",
        "items",
        "batch",
        "setting",
        "latency_ms",
        "recall",
        "floor_ms",
        "speedup_vs_plain",
        "gpu",
    }
    assert all(required | {"exact_fallback_rows"} <= set(row) for row in written["rows"])
    assert [row["index"] for row in written["rows"]] == names and written["rows"][0]["recall"] is None
    assert written["problems"][0]["float64_check"]["queries"] == 1
    page = (tmp_path / "bench_topk.md").read_text()
    assert page == report.markdown(written) and page.count("\n| 3 |") == len(rows)
    assert (tmp_path / "bench_topk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no benchmark rows"):
        report.results_record([], [], meta)


def test_rows_of_a_changed_kernel_are_removed_with_their_reason(tmp_path: Path):
    """--render --drop-index: the JSON, markdown and figure lose the rows and say why; a wrong name fails."""

    record = json.loads((Path(__file__).resolve().parents[1] / "docs" / "bench_topk.json").read_text())
    record.pop("removed", None)  # the committed record may already say what was removed from it
    first = record["rows"][0]["index"]
    kept = [row for row in record["rows"] if row["index"] != first]
    assert kept, "the committed record has more than one index"
    trimmed = report.without_index(record, first, "kernel replaced")
    assert trimmed["rows"] == kept and trimmed["removed"] == [{"index": first, "reason": "kernel replaced"}]
    assert f"`{first}` (kernel replaced)" in report.markdown(trimmed)
    with pytest.raises(ValueError, match="no bench_topk row has index 'nope'"):
        report.without_index(record, "nope", "x")

    source = tmp_path / "in.json"
    source.write_text(json.dumps(record))
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_topk.py"
    command = [sys.executable, str(script), "--render", str(source), "--out", str(tmp_path)]
    done = subprocess.run(
        [*command, "--drop-index", first, "kernel replaced"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "bench_topk.json").read_text())
    assert written["rows"] == kept and (tmp_path / "bench_topk.png").stat().st_size > 0
    failed = subprocess.run([*command, "--drop-index", "nope", "x"], capture_output=True, text=True)
    assert failed.returncode != 0 and "no bench_topk row has index 'nope'" in failed.stderr


def test_the_script_end_to_end_records_when_each_problem_finished(tmp_path: Path):
    """scripts/bench_topk.py --tiny (CPU): a complete run, its files, and each problem's finishing time (where a
    cut-short GPU run's time went)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_topk.py"
    done = subprocess.run(
        [sys.executable, str(script), "--tiny", "--no-faiss", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((tmp_path / "bench_topk.json").read_text())
    assert written["complete"] is True and written["problems"] and written["rows"]
    for problem in written["problems"]:
        assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", problem["finished"]), problem
    assert (tmp_path / "bench_topk.md").read_text().startswith("# Top-k retrieval benchmark")


def test_the_script_waits_for_a_checkpoint_written_while_it_runs(tmp_path: Path):
    """--checkpoint-wait-s: a checkpoint a training of the same GPU round writes later is benchmarked after the
    structured problems; one that never comes ends the run naming it, the structured rows kept (partial)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_topk.py"
    late = tmp_path / "late.ckpt"
    command = [sys.executable, str(script), "--tiny", "--no-faiss", "--checkpoint", str(late)]
    running = subprocess.Popen(
        [*command, "--checkpoint-wait-s", "120", "--out", str(tmp_path / "waited")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert running.poll() is None  # still on its structured problem (or already waiting)
    torch.save(tiny_mol_checkpoint(61)[0], tmp_path / "late.tmp")
    os.replace(tmp_path / "late.tmp", late)  # appears whole, as a symlink to a finished checkpoint does
    _, stderr = running.communicate(timeout=300)
    assert running.returncode == 0, stderr[-2000:]
    written = json.loads((tmp_path / "waited" / "bench_topk.json").read_text())
    assert written["complete"] is True
    assert [p["data"] for p in written["problems"]][-1] == "checkpoint:late"

    missing = tmp_path / "never.ckpt"
    command[command.index(str(late))] = str(missing)
    done = subprocess.run(
        [*command, "--checkpoint-wait-s", "0.5", "--out", str(tmp_path / "gave_up")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and f"--checkpoint {missing}: no such file after waiting 0.5 s" in done.stderr
    partial = json.loads((tmp_path / "gave_up" / "bench_topk.json").read_text())
    assert partial["complete"] is False and partial["rows"]
    assert all(p["data"] == "structured" for p in partial["problems"])
