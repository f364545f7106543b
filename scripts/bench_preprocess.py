#!/usr/bin/env python
"""Time and memory of preprocessing an ML-20M-sized ``ratings.csv`` (synthetic, same format and sizes).

Generates ``ratings.csv`` (header ``userId,movieId,rating,timestamp``, half-star ratings, ids drawn from
131,262 movie ids, 138,493 users sorted like the official file) and ``movies.csv`` (27,278 movies), then runs
``MovieLens20M.prepare`` in a fresh child process and records its wall time and peak RSS
(``ru_maxrss`` of the child). The result replaces the block between the bench markers in ``docs/data.md``.

    python scripts/bench_preprocess.py                      # 20,000,263 rows (the real ML-20M size)
    python scripts/bench_preprocess.py --rows 5000000       # smaller run; the doc says it was scaled
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rails.io import atomic_write, write_marked_section

ML20M_ROWS, ML20M_USERS, ML20M_MOVIES, ML20M_MAX_ID = 20_000_263, 138_493, 27_278, 131_262
DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"
START, END = "<!-- bench_preprocess:start -->", "<!-- bench_preprocess:end -->"

CHILD = """
import json, resource, sys, time
from rails.datamodules.movielens import MovieLens20M
t = time.perf_counter()
out = MovieLens20M(raw_dir=sys.argv[1], cache_dir=sys.argv[2], verify_statistics=False).prepare(sys.argv[2])
wall = time.perf_counter() - t
meta = json.load(open(out / "meta.json"))
print(json.dumps({"wall_s": wall, "num_users": meta["num_users"], "num_interactions": meta["num_interactions"]}))
"""


def generate(directory: Path, rows: int, seed: int = 0) -> None:
    """Write ``ratings.csv`` and ``movies.csv`` of ML-20M's format with ``rows`` ratings."""
    rng = np.random.default_rng(seed)
    movie_ids = np.sort(rng.choice(np.arange(1, ML20M_MAX_ID + 1), size=ML20M_MOVIES, replace=False))
    users = min(ML20M_USERS, max(1, rows // 20))
    per_user = (
        rng.multinomial(rows - 20 * users, np.full(users, 1.0 / users)) + 20 if rows >= 20 * users else None
    )
    user_col = (
        np.repeat(np.arange(1, users + 1), per_user)
        if per_user is not None
        else rng.integers(1, users + 1, rows)
    )
    popularity = rng.zipf(1.3, size=ML20M_MOVIES).astype(np.float64)
    movie_col = rng.choice(movie_ids, size=rows, p=popularity / popularity.sum())
    table = pa.table(
        {
            "userId": user_col,
            "movieId": movie_col,
            "rating": rng.integers(1, 11, size=rows) / 2.0,
            "timestamp": rng.integers(789_652_009, 1_427_784_002, size=rows),
        }
    )
    path = directory / "ratings.csv"
    with open(path, "wb") as handle:
        handle.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    lines = ["movieId,title,genres"] + [f'{m},"Movie {m}, The (1999)",Drama' for m in movie_ids]
    (directory / "movies.csv").write_text("\n".join(lines) + "\n")


def write_doc(result: dict) -> None:
    scaled = result["rows"] != ML20M_ROWS
    lines = [
        f"Measured {result['date']} on {result['machine']} ({result['cpus']} CPUs visible; the machine is shared, "
        "so times are upper bounds), `python scripts/bench_preprocess.py"
        + (f" --rows {result['rows']}`" if scaled else "`")
        + ":",
        "",
        "| rows | users | input size | wall time | peak RSS |",
        "|---:|---:|---:|---:|---:|",
        f"| {result['rows']:,} | {result['num_users']:,} | {result['input_mb']:.0f} MB | {result['wall_s']:.1f} s "
        f"| {result['peak_rss_mb']:.0f} MB |",
    ]
    if scaled:
        factor = ML20M_ROWS / result["rows"]
        lines += [
            "",
            f"Scaled run: linear extrapolation to 20,000,263 rows (x{factor:.1f}) gives about "
            f"{result['wall_s'] * factor:.0f} s and {result['peak_rss_mb'] * factor:.0f} MB (time and the "
            "per-row arrays grow linearly; the extrapolated memory is an upper bound of that model).",
        ]
    if START not in (DOC.read_text() if DOC.exists() else ""):
        atomic_write(
            DOC, (DOC.read_text() if DOC.exists() else "# Data\n") + "\n## Preprocessing benchmark\n"
        )
    write_marked_section(DOC, START, END, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=ML20M_ROWS)
    parser.add_argument("--workdir", help="where to generate the input (default: a temp dir, removed after)")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not update docs/data.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        t = time.perf_counter()
        generate(raw, args.rows)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.1f} s", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(raw), str(Path(tmp) / "out")], capture_output=True, text=True
        )
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if peak_kb <= before:
            print("warning: child peak RSS not above the parent's earlier children", file=sys.stderr)
        result = {
            **json.loads(proc.stdout.strip().splitlines()[-1]),
            "rows": args.rows,
            "input_mb": (raw / "ratings.csv").stat().st_size / 2**20,
            "peak_rss_mb": peak_kb / 1024,
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(result)
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()
