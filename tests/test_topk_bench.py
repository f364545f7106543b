"""scripts/bench_topk.py: the CPU --tiny run writes its tables, and the roofline arithmetic."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_topk.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_topk", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_topk"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_roofline_floor_of_the_acceptance_setting():
    floor_ms, nbytes, flops = _module().roofline(8, 4, 64, 128, 10_000_000, 32, "NVIDIA H100 80GB HBM3")
    assert nbytes == pytest.approx(10_000_000 * (4 * 64 + 32) * 2)
    assert flops == pytest.approx(32 * 10_000_000 * (2 * 32 * 64 + 4 * 32 * 128 + 8 * 32))
    assert floor_ms == pytest.approx(1000 * flops / 989.4e12)  # compute-bound at B = 32


def test_tiny_run_writes_markdown_json_csv(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "bench_topk.json").read_text())["rows"]
    names = {row["index"] for row in rows}
    assert {"reference_torch_chunked", "PerComponentTopK", "AverageTopK", "CombinedTopK"} <= names
    assert all(0.0 <= row["recall"] <= 1.0 and row["latency_ms"] > 0 for row in rows)
    assert all(row["recall"] == 1.0 for row in rows if row["index"] == "reference_torch_chunked")
    assert "| setting |" in (tmp_path / "bench_topk.md").read_text()
    assert (tmp_path / "bench_topk.csv").read_text().startswith("device,")
