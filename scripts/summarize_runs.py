"""Mean ± std of chosen test metrics over every run under one or more folders (a sweep, ``logs``, ...).

Runs are grouped as in ``docs/results.md`` (:func:`rails.results.summarize`): by experiment identity (the
preset's tags, else task name + encoder + head), split protocol and variant (every override except seeds and
paths), so the heads of ``rails-train -m model/similarity=dot,mol seed=1,2,3`` are two rows of three seeds.
The Markdown table is printed (and written atomically with ``--out``).

    python scripts/summarize_runs.py logs --metrics test/ndcg@10 test/recall@100 --out docs/qa_runs.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rails.io import atomic_write
from rails.results import collect_runs, summarize


def table(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    """Markdown: one row per group, ``mean ± std`` (``–`` where no run of the group has the metric)."""
    lines = [
        "| experiment | model | head | protocol | variant | runs | " + " | ".join(metrics) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(metrics),
    ]
    for row in rows:
        values = [row["metrics"].get(name) for name in metrics]
        cells = ["–" if v is None else f"{v['mean']:.4f} ± {v['std']:.4f}" for v in values]
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['head']} | {row['protocol']} | `{row['variant']}` | "
            f"{len(row['run_dirs'])} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="+", type=Path, help="folders searched recursively for metrics.json")
    parser.add_argument("--metrics", nargs="+", default=["test/hr@10", "test/ndcg@10"], help="test/* names")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = table(summarize(collect_runs(args.roots)), args.metrics)
    print(text)
    if args.out is not None:
        atomic_write(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
