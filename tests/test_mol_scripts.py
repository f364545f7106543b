"""The MoL comparison and benchmark scripts run end to end in their CPU smoke modes (slow: subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_compare_heads_quick(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    command = [
        sys.executable,
        "scripts/compare_heads.py",
        "--quick",
        "--seeds",
        "1",
        "--datasets",
        "synthetic",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-dir",
        str(tmp_path / "data"),
        "--output",
        str(output),
    ]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=900)
    text = output.read_text()
    assert "| synthetic | dot |" in text and "| synthetic | mol |" in text
    assert "QUICK MODE" in text
    assert len(list((tmp_path / "runs").glob("*/*/metrics.json"))) == 2
