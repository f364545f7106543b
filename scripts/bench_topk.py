"""Recall-vs-latency benchmark of exact and approximate top-k for Mixture-of-Logits heads.

A command line over :mod:`rails.retrieval.benchmark` (rows, timing, ground truth, roofline),
:mod:`rails.retrieval.benchmark_data` (the problems) and :mod:`rails.retrieval.benchmark_report` (the
files). For MoL heads (P_Q x P_X x d_P settings of the paper) over synthetic corpora, and trained
checkpoints at their corpus size, every row (the plain-PyTorch bf16 brute force = the baseline, the rails
chunked exact index, the fused Triton exact search on CUDA, PerComponentTopK / AverageTopK / CombinedTopK at
several budgets, faiss candidate stages when faiss is importable) is timed on batches of queries and its
recall@k measured against an fp32 exact search (checked against float64). It rewrites
``<out>/bench_topk.{json,md,png}`` whole from this one run.

Data (``--data``, several allowed): ``structured`` (default; a head trained on clustered two-interest data),
``random`` (``--random``; the untrained head), ``checkpoint`` (``--checkpoint PATH ...``; rails-train MoL
checkpoints, each at its own item-table size unless ``--checkpoint-items``, queried by their test users
through the trained encoder with ``--checkpoint-data-root``, else by random items plus noise).

    python scripts/bench_topk.py                       # GPU: 1M and 10M items, 8x4x64 and 8x8x32, bf16
    python scripts/bench_topk.py --items 1000000 --settings 8x4x64 --batch-sizes 32
    python scripts/bench_topk.py --tiny --out /tmp/b   # CPU smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from rails.retrieval.benchmark import (
    BenchSettings,
    Row,
    bench_problem,
    measure_peaks,
    parse_batch_sizes_at,
    parse_fused_config,
    release_memory,
)
from rails.retrieval.benchmark_checkpoint import checkpoint_problem
from rails.retrieval.benchmark_data import (
    Problem,
    SyntheticSettings,
    parse_setting,
    synthetic_problem,
)
from rails.retrieval.benchmark_report import results_record, without_index, write_results
from rails.retrieval.mips import faiss_available
from rails.runs.checkpoints import load_checkpoint_file
from rails.runs.rebuild import trained_test_queries


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--settings", nargs="+", default=["8x4x64", "8x8x32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument(
        "--batch-sizes-at",
        nargs="*",
        default=[],
        metavar="ITEMS:B[,B...]",
        help="other batch sizes for one corpus size, e.g. 100000000:32 (time box of the largest corpora)",
    )
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--data", nargs="+", default=["structured"], choices=["structured", "random", "checkpoint"]
    )
    parser.add_argument("--random", action="store_true", help="shorthand for --data random")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        nargs="+",
        default=[],
        help="rails-train MoL checkpoints (adds --data checkpoint)",
    )
    parser.add_argument(
        "--checkpoint-wait-s",
        type=float,
        default=0.0,
        help="wait up to this long for a --checkpoint file that does not exist yet (one a training of the same "
        "GPU round is still writing: the checkpoint problems come after the others)",
    )
    parser.add_argument(
        "--checkpoint-data-root",
        help="data root of the checkpoints' runs: queries = their test users through the trained encoder "
        "(default: random items plus --query-noise)",
    )
    parser.add_argument(
        "--checkpoint-items",
        type=int,
        help="tile checkpoint item tables to this size (default: their own size)",
    )
    parser.add_argument(
        "--clusters", type=int, default=1024, help="structured: Gaussian clusters on the sphere"
    )
    parser.add_argument("--spread", type=float, default=0.6, help="structured: within-cluster noise norm")
    parser.add_argument(
        "--query-noise", type=float, default=0.3, help="query noise norm (structured/checkpoint)"
    )
    parser.add_argument("--train-steps", type=int, default=300, help="structured: head training steps")
    parser.add_argument("--train-batch", type=int, default=1024, help="structured: queries per training step")
    parser.add_argument("--width", type=int, default=64, help="query/item embedding width D")
    parser.add_argument("--hidden", type=int, default=128, help="gating MLP hidden width")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--time-budget-s", type=float, default=3.0, help="timing seconds per row (>= 1 run)")
    parser.add_argument("--chunk-size", type=int, default=65536, help="items per brute-force / truth chunk")
    parser.add_argument("--truth-queries", type=int, default=256, help="queries with an fp32 ground truth")
    parser.add_argument("--check-queries", type=int, default=4, help="of which checked against float64")
    parser.add_argument(
        "--slow-max-items",
        type=int,
        help="brute-force rows (plain, reference) on larger corpora: timed on this many items and scaled",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the rails chunked exact index row")
    parser.add_argument("--peak-tflops", type=float, help="roofline matmul rate (default: measured here)")
    parser.add_argument("--peak-gbps", type=float, help="roofline bandwidth, GB/s (default: measured here)")
    parser.add_argument("--plot-batch", type=int, help="batch size drawn in the figure (default 32)")
    parser.add_argument(
        "--fused-configs",
        nargs="*",
        default=[],
        help="extra fused tile settings to time: items per tile [x corpus splits] [:queries per tile], e.g. 64 16x528:8",
    )
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny corpus and heads")
    parser.add_argument(
        "--render",
        type=Path,
        help="no run: rewrite --out/bench_topk.{json,md,png} from this JSON (with --drop-index)",
    )
    parser.add_argument(
        "--drop-index",
        nargs=2,
        action="append",
        default=[],
        metavar=("INDEX", "REASON"),
        help="with --render: remove the rows of INDEX (e.g. a kernel changed since the run), saying why",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.items, args.settings, args.batch_sizes = [3000], ["3x2x8"], [1, 8]
        args.width, args.hidden, args.warmup, args.runs, args.k = 16, 16, 1, 3, 20
        args.clusters, args.train_steps, args.train_batch = 32, 10, 64
        args.truth_queries, args.check_queries = 8, 2
    return args


def render(args: argparse.Namespace) -> None:
    """Rewrite the three files from a JSON record, minus the rows of ``--drop-index`` (no benchmark run)."""
    try:
        results = json.loads(args.render.read_text())
        for index, reason in args.drop_index:
            results = without_index(results, index, reason)
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as err:
        raise SystemExit(f"--render {args.render}: {err}") from err
    write_results(results, args.out, args.plot_batch)
    print(f"rendered {len(results['rows'])} rows -> {args.out}/bench_topk.{{json,md,png}}")


def wait_for_file(path: Path, seconds: float, poll_s: float = 10.0) -> None:
    """Return once ``path`` exists; exit naming it after ``seconds`` (0: at once) without it."""
    deadline = time.monotonic() + seconds
    if not path.exists() and seconds > 0:
        print(f"waiting up to {seconds:g} s for --checkpoint {path}", flush=True)
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    if not path.exists():
        waited = f" after waiting {seconds:g} s (--checkpoint-wait-s)" if seconds > 0 else ""
        raise SystemExit(
            f"--checkpoint {path}: no such file{waited}; the rows so far are written, marked partial"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render is not None:
        render(args)
        return
    if args.drop_index:
        raise SystemExit("--drop-index needs --render JSON")
    data = ["random"] if args.random else list(dict.fromkeys(args.data))
    if args.checkpoint and "checkpoint" not in data:
        data.append("checkpoint")
    if "checkpoint" in data and not args.checkpoint:
        raise SystemExit("--data checkpoint needs --checkpoint PATH")
    try:
        for setting in args.settings:
            parse_setting(setting)
        fused_configs = [parse_fused_config(text) for text in args.fused_configs]
    except ValueError as err:
        raise SystemExit(f"--settings / --fused-configs: {err}") from err
    try:
        batch_sizes_at = parse_batch_sizes_at(args.batch_sizes_at)
    except ValueError as err:
        raise SystemExit(f"--batch-sizes-at: {err}") from err
    if min(args.batch_sizes) < 1 or min(args.items) < 1:
        raise SystemExit(f"--items and --batch-sizes must be >= 1, got {args.items}, {args.batch_sizes}")
    synthetic = SyntheticSettings(
        args.width,
        args.hidden,
        args.clusters,
        args.spread,
        args.query_noise,
        args.train_steps,
        args.train_batch,
    )
    bench = BenchSettings(
        batch_sizes=args.batch_sizes,
        k=args.k,
        warmup=args.warmup,
        runs=args.runs,
        time_budget_s=args.time_budget_s,
        chunk_size=args.chunk_size,
        truth_queries=args.truth_queries,
        check_queries=args.check_queries,
        slow_max_items=args.slow_max_items,
        with_reference=not args.no_reference,
        tiny=args.tiny,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with_faiss = faiss_available() and not args.no_faiss
    peaks = measure_peaks(device, args.peak_tflops, args.peak_gbps)
    pool = max(
        [*args.batch_sizes, *(b for sizes in batch_sizes_at.values() for b in sizes), args.truth_queries]
    )
    rows: list[Row] = []
    problems: list[dict] = []
    meta = {
        "gpu": gpu,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "scripts/bench_topk.py", *(sys.argv[1:] if argv is None else argv)]),
        "peaks": asdict(peaks),
        "settings": {
            **asdict(bench),
            "batch_sizes": list(bench.batch_sizes),
            "batch_sizes_at": {str(items): sizes for items, sizes in batch_sizes_at.items()},
            "item_dtype": str(dtype),
        },
    }

    def run(problem: Problem) -> None:
        """Bench one problem, then rewrite the files with every row so far (a run cut short keeps them)."""
        sizes = batch_sizes_at.get(len(problem.item_state), bench.batch_sizes)
        settings = dataclasses.replace(bench, batch_sizes=sizes)
        new_rows, record = bench_problem(problem, settings, device, gpu, peaks, with_faiss, fused_configs)
        rows.extend(new_rows)
        # when each problem was done (building its corpus included): where a run's time goes, a cut-short one's too
        problems.append({**record, "finished": datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S UTC")})
        write_results(results_record(rows, problems, {**meta, "complete": False}), args.out, args.plot_batch)

    for kind in data:
        if kind == "checkpoint":
            for path in args.checkpoint:
                wait_for_file(path, args.checkpoint_wait_s)
                try:
                    checkpoint = load_checkpoint_file(path)
                    user_queries = None
                    if args.checkpoint_data_root is not None:
                        user_queries = trained_test_queries(
                            checkpoint, args.checkpoint_data_root, pool, device, f"--checkpoint {path}"
                        )
                    problem = checkpoint_problem(
                        checkpoint,
                        args.checkpoint_items,
                        args.query_noise,
                        dtype,
                        device,
                        f"--checkpoint {path}",
                        pool,
                        f"checkpoint:{path.stem}",
                        user_queries,
                    )
                except ValueError as err:
                    raise SystemExit(str(err)) from err
                run(problem)
                del problem
                release_memory(device)
            continue
        for num_items in args.items:  # corpus sizes outermost: the largest (slowest) come last
            for setting in args.settings:
                problem = synthetic_problem(kind, setting, num_items, synthetic, dtype, device, pool)
                run(problem)
                del problem
                release_memory(device)  # before the next corpus is generated
    write_results(results_record(rows, problems, {**meta, "complete": True}), args.out, args.plot_batch)


if __name__ == "__main__":
    main()
