"""scripts/cosine_eval_report.py: the round's cosine_eval.json as a table with ratios to MoL; bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "cosine_eval_report.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_table_rows_and_ratios(tmp_path: Path) -> None:
    metrics = {"val/ndcg@10": 0.06, "test/hr@10": 0.1, "test/ndcg@10": 0.05, "test/hr@200": 0.3}
    runs = {"r22_beauty_mol": {"mol": metrics, "cosine": {**metrics, "test/hr@10": 0.08}, "mol+cosine": None}}
    source = tmp_path / "cosine_eval.json"
    source.write_text(json.dumps(runs))
    done = _run(str(source), "--out", str(tmp_path / "study" / "round-cosine.md"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "study" / "round-cosine.md").read_text()
    assert "| `r22_beauty_mol` | mol | 0.0600 | 0.1000 | 0.0500 | 0.3000 | 1.000 / 1.000 |" in text
    assert "| `r22_beauty_mol` | cosine | 0.0600 | 0.0800 | 0.0500 | 0.3000 | 0.800 / 1.000 |" in text
    assert "| `r22_beauty_mol` | mol+cosine | failed | failed | failed | failed | – |" in text
    assert json.loads((tmp_path / "study" / "round-cosine.json").read_text()) == runs


def test_sweeps_with_several_jobs_get_a_mean_row(tmp_path: Path) -> None:
    def metrics(hr: float) -> dict[str, float]:
        return {"val/ndcg@10": 0.1, "test/hr@10": hr, "test/ndcg@10": hr / 2, "test/hr@200": 0.5}

    runs = {
        f"r22_mol/{job}": {"mol": metrics(hr), "cosine": metrics(hr / 2), "mol+cosine": metrics(hr)}
        for job, hr in (("0", 0.2), ("1", 0.4))
    }
    runs["r22_mol/2"] = {
        "mol": metrics(0.9),
        "cosine": None,
        "mol+cosine": metrics(0.9),
    }  # left out of the mean
    source = tmp_path / "cosine_eval.json"
    source.write_text(json.dumps(runs))
    assert _run(str(source), "--out", str(tmp_path / "r.md")).returncode == 0
    text = (tmp_path / "r.md").read_text()
    assert "| `r22_mol (mean of 2)` | mol | 0.1000 | 0.3000 | 0.1500 | 0.5000 | 1.000 / 1.000 |" in text
    assert "| `r22_mol (mean of 2)` | cosine | 0.1000 | 0.1500 | 0.0750 | 0.5000 | 0.500 / 0.500 |" in text


def test_bad_input_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    done = _run(str(bad), "--out", str(tmp_path / "x.md"))
    assert done.returncode != 0 and "broken.json" in done.stderr
    bad.write_text("[1, 2]")
    done = _run(str(bad), "--out", str(tmp_path / "x.md"))
    assert done.returncode != 0 and "expected {run: {scorer: metrics}}" in done.stderr


def test_other_blends_follow_and_validation_picks_a_scorer(tmp_path: Path) -> None:
    def metrics(val: float, hr: float) -> dict[str, float]:
        return {"val/ndcg@10": val, "test/hr@10": hr, "test/ndcg@10": hr / 2, "test/hr@200": 0.5}

    runs = {
        "r23_mol/0": {
            "training run": metrics(0.9, 0.9),  # the run's own metrics: not a scorer
            "mol": metrics(0.10, 0.20),
            "cosine": metrics(0.08, 0.16),
            "mol+cosine": metrics(0.11, 0.21),
            "mol+2cosine": metrics(0.12, 0.19),
            "mol+0.5cosine": metrics(0.105, 0.22),
        }
    }
    source = tmp_path / "cosine_eval.json"
    source.write_text(json.dumps(runs))
    assert _run(str(source), "--out", str(tmp_path / "r.md")).returncode == 0
    text = (tmp_path / "r.md").read_text()
    order = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| `r23_mol/0`")]
    assert order == ["mol", "cosine", "mol+cosine", "mol+0.5cosine", "mol+2cosine"]
    assert "| `r23_mol/0` | mol+2cosine | 0.1200 | 0.1900 | 0.0950 | 0.5000 | 0.950 / 0.950 |" in text
    assert "- `r23_mol/0`: mol+2cosine (validation NDCG@10 0.1200; test 0.1900 / 0.0950)" in text
    assert "training run" not in text
