"""scripts/ingest_runs.py: a GPU round's runs.tar.gz into results/runs/<round>/ (prefix stripped, nothing lost)."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ingest_runs.py"
spec = importlib.util.spec_from_file_location("ingest_runs", SCRIPT)
assert spec is not None and spec.loader is not None
ingest_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ingest_runs)


def _archive(tmp_path: Path, hr: float = 0.1) -> Path:
    """A runs.tar.gz as scripts/gpu_sweep.sh collects it: two finished jobs, one failed."""
    out = tmp_path / "out"
    for sweep, job in (("r12_beauty_dot", "0"), ("r12_beauty_mol", "0")):
        run = out / "runs" / sweep / job
        (run / ".hydra").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"test/hr@10": hr}))
        (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
        (run / "epochs.csv").write_text("epoch,val/hr@10\n0,0.05\n")
    failed = out / "failed" / "r12_beauty_bsarec" / "0"
    failed.mkdir(parents=True)
    (failed / "error.txt").write_text("RuntimeError: CUDA out of memory\ntraceback...\n")
    archive = tmp_path / "runs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out / "runs", arcname="runs")
        tar.add(out / "failed", arcname="failed")
    return archive


def test_finished_runs_land_with_the_prefix_stripped_and_failures_listed(tmp_path: Path) -> None:
    dest = tmp_path / "results" / "runs" / "2026-12-02-h200-round12"
    targets, failed = ingest_runs.ingest(_archive(tmp_path), dest, "r12_")
    assert sorted(t.relative_to(dest).as_posix() for t in targets) == ["beauty_dot/0", "beauty_mol/0"]
    assert json.loads((dest / "beauty_mol" / "0" / "metrics.json").read_text()) == {"test/hr@10": 0.1}
    assert (dest / "beauty_dot" / "0" / ".hydra" / "overrides.yaml").is_file()
    assert (dest / "beauty_dot" / "0" / "epochs.csv").is_file()
    assert failed == ["r12_beauty_bsarec/0: RuntimeError: CUDA out of memory"]
    assert not (dest / "beauty_bsarec").exists()


def test_existing_runs_are_never_overwritten_unless_forced(tmp_path: Path) -> None:
    dest = tmp_path / "round"
    ingest_runs.ingest(_archive(tmp_path), dest, "r12_")
    newer = _archive(tmp_path / "again", hr=0.2)
    with pytest.raises(FileExistsError, match="beauty_dot/0 exists already"):
        ingest_runs.ingest(newer, dest, "r12_")
    assert json.loads((dest / "beauty_dot" / "0" / "metrics.json").read_text()) == {"test/hr@10": 0.1}
    ingest_runs.ingest(newer, dest, "r12_", force=True)
    assert json.loads((dest / "beauty_dot" / "0" / "metrics.json").read_text()) == {"test/hr@10": 0.2}


def test_missing_or_empty_archives_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no archive at"):
        ingest_runs.ingest(tmp_path / "nope.tar.gz", tmp_path / "d")
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(ValueError, match="holds no runs"):
        ingest_runs.ingest(empty, tmp_path / "d")
