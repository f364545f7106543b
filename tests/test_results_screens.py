"""The screen report of a GPU round: per-screen means over jobs, curves at chosen epochs, training loss, ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rails.results import collect_runs
from rails.results_curves import read_train_loss
from rails.results_screens import curve_markdown, curve_rows, screen_markdown, screen_rows

REPO = Path(__file__).resolve().parents[1]


def _job(
    root: Path, screen: str, job: int, head: str, ndcg: list[float], losses: list[float], test: float
) -> Path:
    """One finished job: config, metrics, run.json (epochs trained) and an epochs.csv with two train rows per
    epoch (losses[e] +- 0.5, so the epoch mean is losses[e]), one val row per epoch and the post-fit rows."""
    directory = root / screen / str(job)
    (directory / ".hydra").mkdir(parents=True)
    config = {"tags": ["amazon_beauty", "sasrec", head], "seed": job, "data": {"holdout": 2}}
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={job}"]))
    (directory / "metrics.json").write_text(json.dumps({"test/hr@10": 2 * test, "test/ndcg@10": test}))
    (directory / "run.json").write_text(json.dumps({"epochs": len(ndcg)}))
    lines = ["epoch,step,test/ndcg@10,train/loss,val/ndcg@10"]
    for epoch, (value, loss) in enumerate(zip(ndcg, losses, strict=True)):
        lines += [f"{epoch},{3 * epoch},,{loss - 0.5},", f"{epoch},{3 * epoch + 1},,{loss + 0.5},"]
        lines.append(f"{epoch},{3 * epoch + 2},,,{value}")
    final = 3 * len(ndcg)
    lines += [
        f"{len(ndcg)},{final},,,{max(ndcg)}",
        f"{len(ndcg)},{final},{test},,",
        f"{len(ndcg)},{final},,9.0,",
    ]
    (directory / "epochs.csv").write_text("\n".join(lines) + "\n")
    return directory


def _round(root: Path) -> Path:
    _job(root, "dot", 0, "dot", [0.01, 0.03, 0.05, 0.04], [6.0, 5.0, 4.0, 3.0], 0.050)
    _job(root, "mol", 0, "mol", [0.02, 0.04, 0.03, 0.02], [5.0, 4.0, 3.0, 2.0], 0.040)
    _job(root, "mol", 1, "mol", [0.04, 0.06, 0.05], [5.0, 4.0, 3.0], 0.030)
    return root


def test_read_train_loss_averages_each_epoch_and_names_a_bad_value(tmp_path: Path) -> None:
    path = _job(tmp_path, "dot", 0, "dot", [0.1, 0.2], [4.0, 3.0], 0.05) / "epochs.csv"
    assert read_train_loss(path) == {0: pytest.approx(4.0), 1: pytest.approx(3.0), 2: pytest.approx(9.0)}
    assert read_train_loss(path, trained_epochs=2) == {0: pytest.approx(4.0), 1: pytest.approx(3.0)}
    assert read_train_loss(path, column="train/other") == {}
    path.write_text("epoch,step,train/loss\n0,1,x\n")
    with pytest.raises(ValueError, match=r"epochs\.csv:2: not a number"):
        read_train_loss(path)


def test_screen_rows_average_jobs_and_keep_fit_epochs_only(tmp_path: Path) -> None:
    rows = screen_rows(collect_runs([_round(tmp_path)]), epochs=[1, 3], loss_window=2)
    dot, mol = rows
    assert (dot["screen"], dot["head"], dot["jobs"]) == ("dot", "dot", 1)
    assert (mol["screen"], mol["head"], mol["jobs"]) == ("mol", "mol", 2)
    assert mol["test"]["test/ndcg@10"] == pytest.approx(0.035)
    assert mol["test_std"]["test/ndcg@10"] == pytest.approx(0.00707107, rel=1e-5)
    assert dot["test_std"]["test/ndcg@10"] is None
    assert mol["val"][1] == pytest.approx(0.05)  # both jobs reached epoch 1
    assert mol["val"][3] == pytest.approx(0.02)  # only job 0 trained 4 epochs
    assert dot["best_epoch"] == 2 and mol["best_epoch"] == pytest.approx(1.0)
    # the post-fit row (9.0) is not a training epoch: last two epochs of each job, then the jobs' mean
    assert dot["loss"] == pytest.approx(3.5)
    assert mol["loss"] == pytest.approx((2.5 + 3.5) / 2)


def test_markdown_ratios_to_the_reference_and_an_unknown_reference_is_named(tmp_path: Path) -> None:
    rows = screen_rows(collect_runs([_round(tmp_path)]), epochs=[1])
    table = screen_markdown(rows, "dot", epochs=[1])
    mol_line = next(line for line in table.splitlines() if line.startswith("| `mol`"))
    assert "| 0.700 | 0.700 |" in mol_line  # 0.035 / 0.050 on both metrics
    assert "| 0.0350 ± 0.0071 |" in mol_line  # two jobs (0.040, 0.030): mean ± their sample std
    dot_line = next(line for line in table.splitlines() if line.startswith("| `dot`"))
    assert "| 0.0500 |" in dot_line and "±" not in dot_line  # one job: no spread
    assert "ndcg@10 / ref" in table.splitlines()[0]
    assert "/ ref" not in screen_markdown(rows, None, epochs=[1])
    with pytest.raises(KeyError, match="'sasrec' is not in this round .*dot, mol"):
        screen_markdown(rows, "sasrec", epochs=[1])


def test_script_writes_the_table_and_filters_screens(tmp_path: Path) -> None:
    root = _round(tmp_path / "round")
    out = tmp_path / "docs" / "screens.md"
    command = [sys.executable, str(REPO / "scripts" / "screen_report.py"), str(root), "--epochs", "0"]
    done = subprocess.run(
        [*command, "--only", "mol", "--out", str(out)], capture_output=True, text=True, check=True
    )
    assert out.read_text() == done.stdout
    assert "| `mol` |" in done.stdout and "| `dot` |" not in done.stdout
    failed = subprocess.run([*command, "--reference", "nope"], capture_output=True, text=True)
    assert failed.returncode == 2 and "'nope' is not in this round" in failed.stderr


def _partial_job(root: Path, screen: str, job: int, ndcg: list[float], hr: list[float]) -> Path:
    """One job stopped before its test: a CSVLogger metrics.csv with one train and one val row per epoch."""
    directory = root / screen / str(job)
    directory.mkdir(parents=True)
    lines = ["epoch,step,train/loss,val/hr@10,val/ndcg@10"]
    for epoch, (n, h) in enumerate(zip(ndcg, hr, strict=True)):
        lines += [f"{epoch},{2 * epoch},1.0,,", f"{epoch},{2 * epoch + 1},,{h},{n}"]
    (directory / "metrics.csv").write_text("\n".join(lines) + "\n")
    return directory


def test_curve_rows_compare_best_values_over_a_common_span() -> None:
    early = {0: {"val/ndcg@10": 0.1, "val/hr@10": 0.2}, 1: {"val/ndcg@10": 0.3, "val/hr@10": 0.5}}
    late = {**early, 2: {"val/ndcg@10": 0.9, "val/hr@10": 0.95}}
    other = {0: {"val/ndcg@10": 0.2, "val/hr@10": 0.4}, 1: {"val/ndcg@10": 0.2, "val/hr@10": 0.3}}
    rows = curve_rows([("a", [early, late]), ("b", [other])], epochs=[1, 2], up_to=1)
    a, b = rows
    assert a["jobs"] == 2 and a["last_epoch"] == 1  # the shorter job bounds what every job reached
    assert a["val"] == {1: pytest.approx(0.3), 2: None}  # epoch 2: not reached by every job
    assert a["best"] == {"val/ndcg@10": pytest.approx(0.3), "val/hr@10": pytest.approx(0.5)}
    assert b["best_epoch"] == 0  # a tie keeps the earlier epoch, with its own hr@10
    assert b["best"]["val/hr@10"] == pytest.approx(0.4)
    assert curve_rows([("a", [early, late])], [2])[0]["best"]["val/ndcg@10"] == pytest.approx(0.6)
    table = curve_markdown(rows, "a", [1])
    assert "| `b` | 1 | 1 | 0.2000 | 0.4000 | 0.667 | 0.800 | 0.2000 | 0 |" in table
    with pytest.raises(KeyError, match="'c' is not among the screens"):
        curve_markdown(rows, "c", [1])
    with pytest.raises(ValueError, match="screen 'a'.*at or before epoch -1"):
        curve_rows([("a", [early])], [0], up_to=-1)


def test_curve_script_reads_finished_and_stopped_screens(tmp_path: Path) -> None:
    # a finished screen (epochs.csv + run.json) beside a stopped one (metrics.csv only)
    finished = _round(tmp_path / "2026-12-02-h200-round25") / "mol"
    stopped = tmp_path / "2026-12-02-h200-round26"
    _partial_job(stopped, "dot", 0, [0.01, 0.05], [0.1, 0.3])
    _partial_job(stopped, "dot", 1, [0.03, 0.02, 0.07], [0.2, 0.1, 0.4])
    out = tmp_path / "docs" / "curves.md"
    script = str(REPO / "scripts" / "curve_report.py")
    command = [sys.executable, script, str(finished), str(stopped / "dot"), "--epochs", "1", "--up-to", "1"]
    done = subprocess.run(
        [*command, "--reference", "round26:dot", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.read_text() == done.stdout
    # mol (jobs 0 and 1): best 0.04 at 1 and 0.06 at 1; dot: 0.05 at 1 and 0.03 at 0
    assert "| `round25:mol` | 2 | 2 | 0.0500 | – | 1.250 | – | 0.0500 | 1 |" in done.stdout
    assert "| `round26:dot` | 2 | 1 | 0.0400 | 0.2500 | 1.000 | 1.000 | 0.0350 | 0 |" in done.stdout
    empty = tmp_path / "empty" / "screen"
    (empty / "0").mkdir(parents=True)
    failed = subprocess.run([sys.executable, script, str(empty)], capture_output=True, text=True)
    assert failed.returncode == 2 and "no job folder with epochs.csv or metrics.csv" in failed.stderr
