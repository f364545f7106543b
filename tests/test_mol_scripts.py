"""The MoL step benchmark and the head comparison (a Hydra multirun) run end to end on CPU (slow: subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rails.models.benchmark import TINY
from rails.models.benchmark_report import head_step_report
from tests.conftest import TINY_OVERRIDES

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_mol_step_tiny(tmp_path: Path) -> None:
    output = tmp_path / "bench.md"
    subprocess.run(
        [sys.executable, "scripts/bench_mol_step.py", "--tiny", "--iters", "1", "--output", str(output)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    text = output.read_text()
    assert "| dot | fp32 |" in text and "| mol | fp32 |" in text
    report = json.loads(output.with_suffix(".json").read_text())
    assert [row["head"] for row in report["rows"]] == ["dot", "mol"]
    subprocess.run(
        [sys.executable, "scripts/bench_mol_step.py", "--render", "--output", str(output)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert output.read_text().split("\n")[4:] == text.split("\n")[4:]  # the same page from the JSON alone


def test_render_drops_user_annotations_from_stored_kernel_tables(tmp_path: Path) -> None:
    """Kernel tables stored before the profiler's user annotations were filtered render without them."""
    kernel = {"name": "void gemm_kernel<float>()", "calls": 16.0, "ms": 2.0}
    stored = {"steps": 5, "busy_ms": 10.0, "launches": 20.0, "top": [
        {"name": "forward", "calls": 1.0, "ms": 7.5}, kernel,
        {"name": "Optimizer.step#AdamW.step", "calls": 1.0, "ms": 0.5},
    ]}  # fmt: skip
    row = {"head": "mol", "precision": "fp32", "variant": "eager", "mean_ms": 8.0, "std_ms": 0.1}
    row |= {"peak_gib": 1.0, "M": 100, "profile": stored}
    meta = {"device_name": "NVIDIA H200", "command": "python scripts/bench_mol_step.py", "commit": None}
    report = head_step_report([row], TINY, **meta, warmup=1, iters=2, full_length=False, tiny=False)
    output = tmp_path / "bench.md"
    output.with_suffix(".json").write_text(json.dumps(report))
    command = [sys.executable, "scripts/bench_mol_step.py", "--render", "--output", str(output)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    text = output.read_text()
    assert "mol / fp32 / eager: busy 2.00 ms of 8.00 ms (25%), 18 kernels" in text
    assert "| `void gemm_kernel<float>()` | 16 | 2.000 |" in text
    assert "`forward`" not in text and "`Optimizer.step#AdamW.step`" not in text


@pytest.mark.slow
def test_head_comparison_is_a_multirun_summarised_by_head(tmp_path: Path) -> None:
    """The comparison of scripts/synthetic_oracle.py's docstring (shrunk): one multirun, one row per head."""
    tiny = [o for o in TINY_OVERRIDES if not o.startswith(("~", "++"))]
    command = [sys.executable, "-m", "rails.train", "-m", "data=synthetic", "data.holdout=2"]
    command += ["model/encoder=hstu", "model/similarity=dot,mol", "seed=1,2", *tiny]
    command += ["~logger", "callbacks=none", "++trainer.limit_train_batches=2", f"paths.log_dir={tmp_path}"]
    command += [f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=900)
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 4
    out = tmp_path / "heads.md"
    summary = [sys.executable, "scripts/summarize_runs.py", str(tmp_path / "sweep"), "--out", str(out)]
    subprocess.run(summary, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    rows = [line for line in out.read_text().splitlines() if "model/similarity=" in line]
    assert len(rows) == 2, out.read_text()
    assert all("| 2 |" in row for row in rows)  # two seeds per head
    assert any("DotProductSimilarity" in row for row in rows) and any("MoLSimilarity" in row for row in rows)
