"""scripts/eval_precision_table.py: one table row per head and metric from two rails-eval metrics.json files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_precision_table.py"


def write_eval(work: Path, head: str, mode: str, metrics: dict[str, float]) -> None:
    (work / head / mode).mkdir(parents=True, exist_ok=True)
    (work / head / mode / "metrics.json").write_text(json.dumps(metrics))


def table(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_rows_ratios_and_skipped_heads(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    write_eval(work, "mol_a", "fp32", {"test/hr@10": 0.08, "test/ndcg@10": 0.04, "val/hr@10": 0.1})
    write_eval(work, "mol_a", "bf16", {"test/hr@10": 0.06, "test/ndcg@10": 0.04, "val/hr@10": 0.1})
    write_eval(work, "mol_b", "fp32", {"test/hr@10": 0.05})  # no bf16 evaluation: skipped, said
    done = table(work, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "mol_b: skipped" in done.stderr
    rows = json.loads((out / "eval_precision.json").read_text())["rows"]
    assert [r["head"] for r in rows] == ["mol_a"]
    assert rows[0]["bf16"] == {"test/hr@10": 0.06, "test/ndcg@10": 0.04}  # test metrics of the table only
    md = (out / "eval_precision.md").read_text()
    assert "| `mol_a` | test/hr@10 | 0.0800 | 0.0600 | 0.750 |" in md
    assert "| `mol_a` | test/ndcg@10 | 0.0400 | 0.0400 | 1.000 |" in md


@pytest.mark.parametrize("broken", ["missing_dir", "no_pairs", "bad_json"])
def test_bad_input_names_the_path(tmp_path: Path, broken: str) -> None:
    work = tmp_path / "work"
    if broken == "no_pairs":
        write_eval(work, "mol_a", "fp32", {"test/hr@10": 0.1})
    elif broken == "bad_json":
        write_eval(work, "mol_a", "fp32", {"test/hr@10": 0.1})
        (work / "mol_a" / "bf16").mkdir()
        (work / "mol_a" / "bf16" / "metrics.json").write_text("{not json")
    done = table(work, "--out", tmp_path / "out")
    assert done.returncode != 0
    expected = {"missing_dir": f"{work}: no such directory", "no_pairs": "no head directory with both",
                "bad_json": "bf16/metrics.json: cannot read rails-eval metrics"}[broken]  # fmt: skip
    assert expected in done.stderr
