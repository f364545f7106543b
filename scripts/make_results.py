"""Regenerate ``docs/results.{json,md}`` and the README results table from run directories.

    python scripts/make_results.py results/runs            # the committed run directories (default)

Every row is mean ± std over the seeds of one experiment (see ``rails.results``); the README table between
the ``<!-- results:start -->`` / ``<!-- results:end -->`` markers shows the preset rows of ``--readme-datasets``
and the best tuned row with at least three seeds of each dataset / model / head / protocol.
Datasets whose runs carry ``epochs.csv`` also get ``results_<dataset>.png`` (learning curves) next to
``--md``; a run whose ``epochs.csv`` is unusable is left out of its figure with a warning naming the file.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rails.io import atomic_write, write_marked_section
from rails.results import collect_runs, markdown, summarize, write_learning_curves
from rails.results_compare import readme_table

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="*", type=Path, default=[REPO / "results" / "runs"])
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "results.json")
    parser.add_argument("--md", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--readme-datasets", nargs="+", default=["ml_1m_seq", "amazon_beauty"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runs = collect_runs(args.roots)
    rows = summarize(runs)
    figures = write_learning_curves(runs, args.md.parent)
    for row in rows:  # repository-relative run directories
        row["run_dirs"] = [
            str(Path(p).resolve().relative_to(REPO)) if Path(p).resolve().is_relative_to(REPO) else p
            for p in row["run_dirs"]
        ]
    atomic_write(args.json, json.dumps(rows, indent=2) + "\n")
    atomic_write(args.md, markdown(rows, figures=figures))
    if args.readme.is_file() and START in args.readme.read_text():
        write_marked_section(args.readme, START, END, readme_table(rows, args.readme_datasets))
    written = ", ".join(str(args.md.parent / f["file"]) for f in figures.values()) or "no learning curves"
    print(f"{len(rows)} rows -> {args.json}, {args.md}; {written}")


if __name__ == "__main__":
    main()
