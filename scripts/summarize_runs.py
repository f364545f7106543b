"""Mean ± std of chosen metrics over every run under a log directory, grouped by task name.

Each run directory holds ``metrics.json`` and ``.hydra/config.yaml`` (written by rails-train); runs are
grouped by their ``task_name`` and the table is printed as Markdown (and written with ``--out``).

    python scripts/summarize_runs.py logs --metrics test/ndcg@10 test/recall@100 --out docs/qa_runs.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import yaml


def collect(root: Path) -> dict[str, list[dict[str, float]]]:
    """task_name -> list of metrics dicts, one per run directory under ``root``."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for metrics_path in sorted(root.rglob("metrics.json")):
        config_path = metrics_path.parent / ".hydra" / "config.yaml"
        task = "unknown"
        if config_path.is_file():
            task = (yaml.safe_load(config_path.read_text()) or {}).get("task_name", task)
        groups[task].append(json.loads(metrics_path.read_text()))
    return groups


def table(groups: dict[str, list[dict[str, float]]], metrics: list[str]) -> str:
    """Markdown table: one row per task, mean ± std (n runs) per metric."""
    lines = ["| task | runs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for task, runs in sorted(groups.items()):
        cells = []
        for name in metrics:
            values = [r[name] for r in runs if r.get(name) is not None]
            if not values:
                cells.append("–")
                continue
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f} ± {spread:.4f}")
        lines.append(f"| {task} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="directory searched recursively for metrics.json")
    parser.add_argument("--metrics", nargs="+", default=["test/hr@10", "test/ndcg@10"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = table(collect(args.root), args.metrics)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
