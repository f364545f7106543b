"""Recall-vs-latency benchmark of exact and approximate top-k for Mixture-of-Logits heads.

A command line over :mod:`rails.retrieval.benchmark` (timing, recall, roofline, result files) and
:mod:`rails.retrieval.benchmark_data` (the problems). For MoL heads (P_Q x P_X x d_P settings of the paper)
over synthetic corpora, or a trained checkpoint's head and item table, every index (plain-PyTorch chunked
brute force = the reference row, fused Triton exact search on CUDA, PerComponentTopK / AverageTopK /
CombinedTopK at several budgets, faiss candidate stages when faiss is importable) is timed on batches of
queries and its recall@k against the exact top-k is measured on the same queries. Results:
``<out>/bench_topk.{md,json,csv}`` (and ``.png``).

Data (``--data``, several allowed): ``structured`` (default; a head trained on clustered two-interest data),
``random`` (``--random``; the untrained head), ``checkpoint`` (``--checkpoint PATH``; a rails-train MoL
checkpoint, its table tiled to ``--items``).

    python scripts/bench_topk.py                       # GPU: 1M and 10M items, 8x4x64 and 8x8x32, bf16
    python scripts/bench_topk.py --items 1000000 --settings 8x4x64 --batch-sizes 32
    python scripts/bench_topk.py --tiny --out /tmp/b   # CPU smoke run (used by the tests)
    python scripts/bench_topk.py --items 1000000 --batch-sizes 32 --data structured random --runs 10 --no-faiss
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rails.retrieval.benchmark import BenchSettings, Row, bench_problem, parse_fused_config, write_results
from rails.retrieval.benchmark_data import (
    SyntheticSettings,
    checkpoint_problem,
    parse_setting,
    synthetic_problem,
)
from rails.retrieval.mips import faiss_available
from rails.runs.checkpoints import load_checkpoint_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--settings", nargs="+", default=["8x4x64", "8x8x32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--data", nargs="+", default=["structured"], choices=["structured", "random", "checkpoint"]
    )
    parser.add_argument(
        "--random", action="store_true", help="shorthand for --data random (the old benchmark)"
    )
    parser.add_argument("--checkpoint", type=Path, help="rails-train MoL checkpoint (adds --data checkpoint)")
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
    parser.add_argument("--reference-chunk", type=int, default=65536)
    parser.add_argument(
        "--fused-configs",
        nargs="*",
        default=[],
        help="extra fused tile settings to time: items per tile [x corpus splits], e.g. 64 128x264",
    )
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny corpus and heads")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.items, args.settings, args.batch_sizes = [3000], ["3x2x8"], [1, 8]
        args.width, args.hidden, args.warmup, args.runs, args.k = 16, 16, 1, 3, 20
        args.clusters, args.train_steps, args.train_batch = 32, 10, 64
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = ["random"] if args.random else list(dict.fromkeys(args.data))
    if args.checkpoint is not None and "checkpoint" not in data:
        data.append("checkpoint")
    if "checkpoint" in data and args.checkpoint is None:
        raise SystemExit("--data checkpoint needs --checkpoint PATH")
    try:
        for setting in args.settings:
            parse_setting(setting)
        fused_configs = [parse_fused_config(text) for text in args.fused_configs]
    except ValueError as err:
        raise SystemExit(f"--settings / --fused-configs: {err}") from err
    synthetic = SyntheticSettings(
        args.width,
        args.hidden,
        args.clusters,
        args.spread,
        args.query_noise,
        args.train_steps,
        args.train_batch,
    )
    bench = BenchSettings(args.batch_sizes, args.k, args.warmup, args.runs, args.reference_chunk, args.tiny)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with_faiss = faiss_available() and not args.no_faiss
    rows: list[Row] = []
    for kind in data:
        for setting in ["checkpoint"] if kind == "checkpoint" else args.settings:
            for num_items in args.items:
                if kind == "checkpoint":
                    checkpoint = load_checkpoint_file(args.checkpoint)
                    try:
                        problem = checkpoint_problem(
                            checkpoint,
                            num_items,
                            args.query_noise,
                            dtype,
                            device,
                            f"--checkpoint {args.checkpoint}",
                        )
                    except ValueError as err:
                        raise SystemExit(str(err)) from err
                else:
                    problem = synthetic_problem(kind, setting, num_items, synthetic, dtype, device)
                rows += bench_problem(
                    problem, setting, num_items, bench, device, device_name, with_faiss, fused_configs
                )
                del problem
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    write_results(rows, args.out, device_name)


if __name__ == "__main__":
    main()
