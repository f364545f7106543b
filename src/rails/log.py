"""Run output: a rank-zero logger, the atomic ``metrics.json`` and the rich metrics table."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

from lightning.pytorch.utilities import rank_zero_only

from rails.io import atomic_write


def get_logger(name: str) -> logging.Logger:
    """A logger whose info/warning calls only emit on global rank zero."""
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "exception", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger


def write_metrics(path: str | os.PathLike[str], metrics: Mapping[str, float]) -> None:
    """Atomically write ``metrics`` as sorted JSON (NaN/inf written as null)."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in sorted(metrics.items())
    }
    atomic_write(path, json.dumps(clean, indent=2) + "\n")


def print_metrics_table(
    metrics: Mapping[str, float], title: str = "rails metrics", caption: str | None = None
) -> None:
    """Print metrics as a rich table: one row per metric, one column per split (val, test, test/popularity)."""
    from rich.console import Console
    from rich.table import Table

    columns: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        stage, _, name = key.rpartition("/")
        columns.setdefault(stage or "-", {})[name] = value
    names: list[str] = []
    for values in columns.values():
        names += [n for n in values if n not in names]
    table = Table(title=title)
    table.add_column("metric", style="bold", no_wrap=True)
    for stage in columns:
        table.add_column(stage, justify="right", no_wrap=True)
    for name in names:
        table.add_row(name, *(f"{columns[s][name]:.4f}" if name in columns[s] else "" for s in columns))
    console = Console(width=max(80, 14 + 18 * len(columns)))
    console.print(table)
    if caption:
        console.print(caption, soft_wrap=True)
