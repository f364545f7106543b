"""SweepSummary: a Hydra callback that tabulates every job of a sweep and names the best one.

At the end of a multirun (basic or Optuna sweeper, any launcher) it reads each job directory's
``metrics.json`` (written by ``rails-train``), ``.hydra/overrides.yaml`` and ``error.txt`` (written when a
job failed), prints a rich table sorted by the optimised metric, why each failed job failed, the best
trial's overrides and all its metrics, and writes ``summary.json`` and ``summary.csv`` into the sweep
directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Literal

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rails.io import atomic_write
from rails.log import get_logger

log = get_logger(__name__)


def _error_line(error_file: Path) -> str | None:
    """The last non-empty line of a job's ``error.txt`` (the exception of a traceback), or None."""
    if not error_file.is_file():
        return None
    lines = [line.strip() for line in error_file.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per job directory under ``sweep_dir``: ``job``, ``dir``, ``status``, ``overrides``,
    ``metrics`` and ``error`` (the last line of ``error.txt``, None for a job that did not fail)."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        error = _error_line(job_dir / "error.txt")
        status = "failed" if error is not None else ("ok" if metrics else "missing")
        jobs.append(
            {
                "job": job_dir.name,
                "dir": str(job_dir),
                "status": status,
                "overrides": list(OmegaConf.load(overrides_file)),
                "metrics": metrics,
                "error": error,
            }
        )
    jobs.sort(key=lambda j: (0, int(j["job"])) if j["job"].isdigit() else (1, j["job"]))
    return jobs


def best_job(jobs: list[dict[str, Any]], metric: str, mode: Literal["max", "min"]) -> dict[str, Any] | None:
    """The job with the best finite ``metric`` (None if no job has one)."""
    scored = [
        j
        for j in jobs
        if isinstance(j["metrics"].get(metric), (int, float)) and math.isfinite(j["metrics"][metric])
    ]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda j: j["metrics"][metric])


class SweepSummary(Callback):
    """Print and save the table of a sweep's jobs and its best trial.

    Args:
        metric: metric to rank jobs by (``optimized_metric``).
        mode: ``max`` or ``min``.
        columns: other metrics shown in the table.
    """

    def __init__(
        self,
        metric: str = "val/ndcg@10",
        mode: Literal["max", "min"] = "max",
        columns: list[str] | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"hydra.callbacks.summary.mode must be max or min, got {mode!r}")
        self.metric = metric
        self.mode = mode
        self.columns = list(columns) if columns is not None else ["val/hr@10", "test/hr@10", "test/ndcg@10"]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir)
        best = best_job(jobs, self.metric, self.mode)
        summary = {"metric": self.metric, "mode": self.mode, "best": best, "jobs": jobs}
        atomic_write(sweep_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self._write_csv(sweep_dir / "summary.csv", jobs)
        self._print(sweep_dir, jobs, best)

    def _write_csv(self, path: Path, jobs: list[dict[str, Any]]) -> None:
        names = sorted({k for j in jobs for k in j["metrics"]})
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["job", "status", "overrides", *names, "error"])
        for j in jobs:
            metrics = (j["metrics"].get(n) for n in names)
            writer.writerow([j["job"], j["status"], " ".join(j["overrides"]), *metrics, j["error"] or ""])
        atomic_write(path, text.getvalue())

    def _print(self, sweep_dir: Path, jobs: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        def fmt(value: Any) -> str:
            return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

        sign = -1.0 if self.mode == "max" else 1.0

        def order(j: dict[str, Any]) -> tuple[int, float]:
            value = j["metrics"].get(self.metric)
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            return (0, sign * value) if ok else (1, 0.0)

        table = Table(title=f"rails sweep: {sweep_dir} ({len(jobs)} jobs, by {self.metric} {self.mode})")
        for column in ("job", "status", "overrides", self.metric, *self.columns):
            table.add_column(column, justify="right" if "/" in column else "left")
        for j in sorted(jobs, key=order):
            style = "bold green" if best is not None and j["job"] == best["job"] else None
            table.add_row(
                j["job"],
                j["status"],
                " ".join(j["overrides"]),
                *(fmt(j["metrics"].get(c)) for c in (self.metric, *self.columns)),
                style=style,
            )
        console = Console()
        console.print(table)
        for j in jobs:
            if j["error"] is not None:
                console.print(f"[red]job {j['job']} failed:[/] {escape(j['error'])}", highlight=False)
        if best is None:
            console.print(f"[bold red]no job reported {self.metric}[/]")
            return
        console.print(
            f"best: job {best['job']} ({best['dir']})  overrides: {' '.join(best['overrides']) or '-'}"
        )
        best_table = Table(title=f"best trial metrics (job {best['job']})")
        best_table.add_column("metric")
        best_table.add_column("value", justify="right")
        for key, value in sorted(best["metrics"].items()):
            best_table.add_row(key, fmt(value))
        console.print(best_table)
