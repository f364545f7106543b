"""The DDP check (rails.runs.ddp_bench, its report, the EpochTimer callback, scripts/bench_ddp.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from rails.callbacks.epoch_timer import EpochTimer
from rails.runs import ddp_bench
from rails.runs.ddp_bench import (
    BenchSettings,
    ScalingPoint,
    compare_metrics,
    epoch_seconds,
    eval_sharding,
    summarize,
)
from rails.runs.ddp_bench_report import END, START, load_summary, render, update_section
from tests.conftest import REPO_ROOT, TINY_OVERRIDES


# ------------------------------------------------------------------------------------------- EpochTimer
def _trainer(tmp_path: Path, rank: int = 0, world: int = 2, sanity: bool = False) -> Any:
    return SimpleNamespace(
        global_rank=rank, world_size=world, default_root_dir=str(tmp_path), sanity_checking=sanity
    )


def test_epoch_timer_records_training_epochs_without_validation_and_the_evaluated_users(
    tmp_path: Path,
) -> None:
    timer, trainer, module = EpochTimer(), _trainer(tmp_path, rank=1), torch.nn.Linear(1, 1)
    module.device = torch.device("cpu")  # what a LightningModule exposes
    timer.on_validation_start(trainer, module)  # a sanity check before training: not recorded
    timer.on_validation_batch_start(trainer, module, SimpleNamespace(user_ids=torch.tensor([9])), 0)
    trainer.sanity_checking = True
    timer.on_validation_end(trainer, module)
    trainer.sanity_checking = False
    assert timer.eval == {}

    timer.on_train_epoch_start(trainer, module)
    timer.on_validation_start(trainer, module)  # closes the training part of epoch 0
    assert len(timer.train_epoch_s) == 1
    for i, users in enumerate(([5, 1], [3])):
        timer.on_validation_batch_start(trainer, module, SimpleNamespace(user_ids=torch.tensor(users)), i)
    timer.on_validation_end(trainer, module)
    timer.on_train_epoch_end(trainer, module)  # validation already closed the epoch: nothing added
    timer.on_train_epoch_start(trainer, module)  # epoch 1 without validation
    timer.on_train_epoch_end(trainer, module)
    timer.on_test_start(trainer, module)
    timer.on_test_batch_start(trainer, module, SimpleNamespace(user_ids=torch.tensor([[4], [2]])), 0)
    timer.on_test_end(trainer, module)

    record = json.loads((tmp_path / "epoch_timer" / "rank1.json").read_text())
    assert record["rank"] == 1 and record["world_size"] == 2
    assert len(record["train_epoch_s"]) == 2 and all(s >= 0 for s in record["train_epoch_s"])
    assert record["eval"]["val"]["users"] == [1, 3, 5] and record["eval"]["val"]["batches"] == 2
    assert record["eval"]["test"]["users"] == [2, 4] and record["eval"]["test"]["batches"] == 1


# ---------------------------------------------------------------------------------- fake run directories
def _run_dir(root: Path, epochs: list[list[float]], users: list[list[int]]) -> Path:
    """A run directory whose rank r timed ``epochs[r]`` and evaluated ``users[r]`` (val)."""
    for rank, (seconds, ids) in enumerate(zip(epochs, users)):
        record = {
            "rank": rank,
            "world_size": len(epochs),
            "train_epoch_s": seconds,
            "eval": {"val": {"seconds": 0.1, "batches": 1, "users": ids}},
        }
        (root / "epoch_timer").mkdir(parents=True, exist_ok=True)
        (root / "epoch_timer" / f"rank{rank}.json").write_text(json.dumps(record))
    return root


def test_epoch_seconds_skips_the_warm_up_and_takes_the_slowest_rank(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, [[9.0, 1.0, 2.0], [8.0, 1.5, 1.0]], [[0], [1]])
    mean, per_epoch = epoch_seconds(run)
    assert per_epoch == [9.0, 1.5, 2.0]
    assert mean == pytest.approx(1.75)
    with pytest.raises(ValueError, match="none left after skipping 3"):
        epoch_seconds(run, skip=3)


def test_epoch_seconds_rejects_missing_and_inconsistent_records(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="EpochTimer"):
        epoch_seconds(tmp_path)
    run = _run_dir(tmp_path / "a", [[1.0, 2.0], [1.0]], [[0], [1]])
    with pytest.raises(ValueError, match="different numbers of epochs"):
        epoch_seconds(run)
    (run / "epoch_timer" / "rank0.json").unlink()
    with pytest.raises(ValueError, match=r"ranks \[1\] but world size 2"):
        epoch_seconds(run)


def test_eval_sharding_checks_disjoint_shards_that_cover_the_single_device_users(tmp_path: Path) -> None:
    single = _run_dir(tmp_path / "one", [[1.0, 1.0]], [[1, 2, 3, 4, 5]])
    good = eval_sharding(_run_dir(tmp_path / "good", [[1.0, 1.0]] * 2, [[1, 3, 5], [2, 4]]), single)
    assert good["sharded"] and good["disjoint"] and good["union_equals_single"]
    assert good["users_per_rank"] == [3, 2] and good["users_single"] == 5
    overlap = eval_sharding(_run_dir(tmp_path / "overlap", [[1.0, 1.0]] * 2, [[1, 2, 3, 5], [2, 4]]), single)
    assert not overlap["disjoint"] and overlap["union_equals_single"] and not overlap["sharded"]
    unsharded = eval_sharding(_run_dir(tmp_path / "copy", [[1.0, 1.0]] * 2, [[1, 2, 3, 4, 5]] * 2), single)
    assert not unsharded["sharded"]
    short = eval_sharding(_run_dir(tmp_path / "short", [[1.0, 1.0]] * 2, [[1, 3], [2, 4]]), single)
    assert short["disjoint"] and not short["union_equals_single"] and not short["sharded"]
    with pytest.raises(ValueError, match="no test evaluation"):
        eval_sharding(tmp_path / "good", single, stage="test")


def test_compare_metrics_takes_the_largest_absolute_difference() -> None:
    result = compare_metrics(
        {"val/hr@10": 0.5, "val/ndcg@10": 0.25, "test/mrr": None, "only/ddp": 1.0},
        {"val/hr@10": 0.5 + 3e-7, "val/ndcg@10": 0.2, "test/mrr": None},
    )
    assert result["compared"] == 3 and result["worst_metric"] == "val/ndcg@10"
    assert result["max_abs_diff"] == pytest.approx(0.05)
    assert result["diffs"]["val/hr@10"] == pytest.approx(3e-7) and result["diffs"]["test/mrr"] == 0.0
    assert math.isinf(compare_metrics({"a": None}, {"a": 0.1})["max_abs_diff"])
    with pytest.raises(ValueError, match="no common metric"):
        compare_metrics({"a": 1.0}, {"b": 1.0})


def test_settings_reject_runs_that_cannot_measure_anything() -> None:
    with pytest.raises(ValueError, match="gpus must be >= 2"):
        BenchSettings(gpus=1)
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        BenchSettings(epochs=1)
    with pytest.raises(ValueError, match="global_batches"):
        BenchSettings(gpus=4, global_batches=[2])
    with pytest.raises(ValueError, match="both empty"):
        BenchSettings(global_batches=(), per_gpu_batches=())
    with pytest.raises(ValueError, match="per_gpu_batches"):
        BenchSettings(per_gpu_batches=[0])


def test_run_kills_a_command_past_the_deadline_and_reports_failures_with_the_log(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="time budget spent"):
        ddp_bench._run([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "a.log", start + 0.5)
    assert time.monotonic() - start < 30
    with pytest.raises(RuntimeError, match=r"exit 3[\s\S]*boom"):
        ddp_bench._run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "b.log")


def test_bench_keeps_the_batch_sizes_finished_before_the_budget_ran_out(tmp_path: Path, monkeypatch) -> None:
    def fake(
        settings: BenchSettings, point: ScalingPoint, out: Path, deadline: float | None
    ) -> dict[str, Any]:
        if point.batch_many == 512:
            raise TimeoutError("time budget spent")
        return _row(point.batch_many, 2.0, 1.0, 0.0)

    monkeypatch.setattr(ddp_bench, "bench_batch", fake)
    settings = BenchSettings(global_batches=(128, 512, 1024), max_seconds=1.0)
    summary = ddp_bench.bench(settings, tmp_path, tmp_path / "bench.json", command="bench")
    assert [r["global_batch"] for r in summary["runs"]] == [128]
    assert len(summary["not_measured"]) == 2 and "strong 512" in summary["not_measured"][0]
    assert load_summary(tmp_path / "bench.json") == summary
    assert "Not measured: strong 1024" in render(summary)
    stuck = ScalingPoint("strong", 512, 512)
    monkeypatch.setattr(ddp_bench, "bench_batch", lambda *a: fake(settings, stuck, tmp_path, None))
    with pytest.raises(TimeoutError):  # nothing finished: nothing to summarize
        ddp_bench.bench(settings, tmp_path, tmp_path / "none.json")


# ----------------------------------------------------------------------------------- JSON and markdown
def _row(batch: int, one: float, many: float, diff: float, scaling: str = "strong") -> dict[str, Any]:
    return {
        "scaling": scaling,
        "batch_1gpu": batch if scaling == "strong" else batch // 2,
        "global_batch": batch,
        "per_gpu_batch": batch // 2,
        "epoch_s": {"1": one, "2": many},
        "epoch_s_all": {"1": [5.0, one], "2": [6.0, many]},
        "speedup": one / many,
        "max_metric_abs_diff": diff,
        "worst_metric": "val/ndcg@10",
        "metrics_compared": 12,
        "metric_diffs": {},
        "eval_sharding": {"sharded": True, "users_per_rank": [3020, 3020]},
        "gpu": "NVIDIA H200",
        "commands": [f"python -m rails.train data.batch_size={batch}"],
    }


def test_summary_headline_is_the_first_batch_and_the_markdown_tells_where_the_speedup_is_met() -> None:
    settings = BenchSettings(global_batches=(128, 512))
    summary = summarize(settings, [_row(128, 2.0, 1.6, 2e-7), _row(512, 1.0, 0.5, 0.0)], "bench")
    assert summary["gpus"] == 2 and summary["epoch_s"] == {"1": 2.0, "2": 1.6}
    assert summary["speedup"] == pytest.approx(1.25) and summary["max_metric_abs_diff"] == 2e-7
    accept = summary["acceptance"]
    assert (
        not accept["speedup_met"] and accept["metrics_met"] and accept["speedup_met_at_global_batch"] == [512]
    )
    text = render(summary)
    assert (
        "| strong | 128 | 128 | 64 | 2.000 | 1.600 | 1.25x | 2.0e-07 (val/ndcg@10) | yes (3020, 3020) |"
        in text
    )
    assert "| strong | 512 | 512 | 256 | 1.000 | 0.500 | 2.00x |" in text
    assert "reached at strong 512" in text and "(4x fewer steps)" in text
    met = render(summarize(settings, [_row(128, 2.0, 1.0, 0.0)], "bench"))
    assert "speed-up 2.00x >= 1.8: yes" in met and "reached at" not in met


def test_update_section_replaces_only_the_generated_block(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nintro\n")
    update_section(page, "first\n")
    assert page.read_text() == f"# Benchmarks\n\nintro\n\n{START}\nfirst\n{END}\n"
    page.write_text(page.read_text() + "\nafter\n")
    update_section(page, "second")
    update_section(page, "second")  # idempotent
    assert page.read_text() == f"# Benchmarks\n\nintro\n\n{START}\nsecond\n{END}\n\nafter\n"
    page.write_text(f"x\n{END}\n")
    with pytest.raises(ValueError, match="end marker of the DDP block only"):
        update_section(page, "third")


def test_load_summary_names_the_file_and_the_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "bench_ddp.json"
    path.write_text(json.dumps({"gpus": 2}))
    with pytest.raises(ValueError, match=r"bench_ddp.json: not a bench_ddp summary \(missing \['epoch_s'"):
        load_summary(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_summary(path)


def test_render_command_regenerates_the_markdown_from_the_json(tmp_path: Path) -> None:
    summary = summarize(BenchSettings(global_batches=(128,)), [_row(128, 2.0, 1.0, 0.0)], "bench")
    (tmp_path / "bench_ddp.json").write_text(json.dumps(summary))
    (tmp_path / "benchmarks.md").write_text(f"# B\n\n{START}\nold\n{END}\n")
    result = subprocess.run(
        [sys.executable, "scripts/bench_ddp.py", "render", "--json", str(tmp_path / "bench_ddp.json"),
         "--markdown", str(tmp_path / "benchmarks.md")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    page = (tmp_path / "benchmarks.md").read_text()
    assert "old" not in page and "| strong | 128 | 128 | 64 | 2.000 | 1.000 | 2.00x |" in page


# ------------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_bench_on_two_gloo_processes_writes_an_honest_summary(tmp_path: Path) -> None:
    """The whole flow with trainer=ddp_sim: 1 vs 2 CPU processes, rails-eval of the 2-process checkpoint."""
    data = [o for o in TINY_OVERRIDES if o.startswith(("data.", "model."))]
    data = [o for o in data if not o.startswith(("data.batch_size", "data.source.num_users"))]
    overrides = [
        *data,
        "data.source.num_users=121",  # odd: one rank evaluates one user more
        "trainer.enable_model_summary=false",
        "~logger",
        f"paths.data_dir={tmp_path / 'data'}",
        f"data.root={tmp_path / 'data'}",
    ]
    out, json_path, page = tmp_path / "runs", tmp_path / "bench_ddp.json", tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    command = [
        sys.executable, "scripts/bench_ddp.py", "run", "--experiment", "quickstart", "--trainer-one", "cpu",
        "--trainer-many", "ddp_sim", "--epochs", "2", "--per-gpu-batches", "16", "--global-batches", "32",
        "--out", str(out),
        "--json", str(json_path), "--markdown", str(page), "--", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = load_summary(json_path)
    assert summary["gpus"] == 2 and set(summary["epoch_s"]) == {"1", "2"}
    assert all(s > 0 for s in summary["epoch_s"].values())
    assert summary["speedup"] == pytest.approx(summary["epoch_s"]["1"] / summary["epoch_s"]["2"])
    weak, strong = summary["runs"]  # the weak-scaling point first: the headline
    assert (weak["scaling"], weak["batch_1gpu"], weak["global_batch"], weak["per_gpu_batch"]) == (
        "weak",
        16,
        32,
        16,
    )
    assert (strong["scaling"], strong["batch_1gpu"], strong["global_batch"]) == ("strong", 32, 32)
    assert summary["scaling"] == "weak" and "data.batch_size=16" in weak["commands"][0]
    assert "data.batch_size=32" in weak["commands"][1] and weak["max_metric_abs_diff"] <= 1e-6
    row = summary["runs"][0]
    assert row["metrics_compared"] > 0 and any(k.startswith("val/") for k in row["metric_diffs"])
    assert summary["max_metric_abs_diff"] <= 1e-6  # one checkpoint, same users: sums agree up to rounding
    assert summary["eval_sharded"] and sorted(row["eval_sharding"]["users_per_rank"]) == [60, 61]
    assert len(row["epoch_s_all"]["2"]) == 2 and len(row["commands"]) == 3
    assert START in page.read_text() and "| strong | 32 | 32 | 16 |" in page.read_text()
    assert "| weak | 16 | 32 | 16 |" in page.read_text()


def test_weak_scaling_points_come_first_and_head_the_summary() -> None:
    settings = BenchSettings(gpus=2, global_batches=(128,), per_gpu_batches=(128,))
    assert settings.points() == [ScalingPoint("weak", 128, 256), ScalingPoint("strong", 128, 128)]
    assert [p.label for p in settings.points()] == ["weak 128 per GPU", "strong 128"]
    weak, strong = _row(256, 1.6, 0.85, 0.0, scaling="weak"), _row(128, 1.6, 1.35, 0.0)
    summary = summarize(settings, [weak, strong], "bench")
    assert summary["scaling"] == "weak" and summary["batch_1gpu"] == 128 and summary["global_batch"] == 256
    assert summary["acceptance"]["speedup_met"] and summary["acceptance"]["speedup_met_at"] == [
        "weak 128 per GPU"
    ]
    text = render(summary)
    assert "| weak | 128 | 256 | 128 | 1.600 | 0.850 | 1.88x |" in text
    assert "headline row (weak scaling, 128 per GPU: global batch 128 on 1 GPU, 256 on 2)" in text
    assert "weak scaling: the same batch per GPU" in text
