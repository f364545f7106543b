"""Benchmark HSTU-large training steps: materialising PyTorch attention vs the fused Triton kernel.

A command line over :mod:`rails.models.benchmark_hstu`.

For each sequence length (200, 1024, 4096 by default) it times encoder forward + backward + AdamW step on
full-length random sequences with the same batch for both paths (``--batch-sizes``, default 655 / 128 / 8,
i.e. 131k tokens up to N = 1024 and 32k at 4096) and records the peak memory; a path that runs out of memory
is recorded as OOM and the other is still timed. Then, budget permitting, it estimates one ML-1M-sized epoch
(6,040 users, lengths 20..200 like ML-1M, batch 128, 128 uniform negatives, full RetrievalModule loss).
The run is time-boxed by ``--max-seconds`` (measurements not started in time are recorded as skipped) and
``<out>.md`` / ``<out>.json`` (device name, date) are rewritten after every measurement.

Examples:
    python scripts/bench_hstu.py                                   # on a GPU -> docs/bench_hstu.{md,json}
    python scripts/bench_hstu.py --device cpu --tiny --out /tmp/bench_hstu   # smoke test on CPU
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import torch

from rails.kernels import triton_usable
from rails.models.benchmark_hstu import (
    IMPLS,
    Budget,
    HSTUBench,
    batch_sizes,
    bench_epoch,
    bench_lengths,
    write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda | cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 1024, 4096])
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=None,
        help="batch per length (default 655 / 128 / 8 for 200 / 1024 / 4096, else --tokens // N)",
    )
    parser.add_argument("--tokens", type=int, default=131072, help="B * N when --batch-sizes is not given")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (includes compilation)")
    parser.add_argument(
        "--max-seconds", type=float, default=150.0, help="stop starting new measurements after this"
    )
    parser.add_argument("--precision", choices=("bf16-mixed", "32-true"), default="bf16-mixed")
    parser.add_argument("--no-epoch", action="store_true", help="skip the ML-1M epoch estimate")
    parser.add_argument("--tiny", action="store_true", help="tiny model and lengths (CPU smoke test)")
    parser.add_argument("--out", default="docs/bench_hstu", help="output path without extension")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available (use --device cpu --tiny for a smoke test)")
    if args.tiny and args.lengths == [200, 1024, 4096]:
        args.lengths, args.tokens, args.steps, args.warmup = [16, 32], 64, 2, 1
    try:
        sizes = batch_sizes(args.lengths, args.tokens, args.batch_sizes, args.tiny)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    bench = HSTUBench(args.lengths, sizes, args.steps, args.warmup, args.precision, args.tiny)
    budget = Budget(args.max_seconds)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    impls = [i for i in IMPLS if i == "torch" or triton_usable(device)]
    meta = {
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "precision": args.precision,
        "model": "tiny (D 16, 2 blocks)"
        if args.tiny
        else "HSTU-large ML-1M (D 50, 8 blocks, 2 heads, 25/25)",
        "impls": impls,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "max_seconds": args.max_seconds,
    }
    out = Path(args.out)
    rows = bench_lengths(bench, device, impls, budget, lambda done: write_report(out, meta, done, []))
    epoch_rows = [] if args.no_epoch else bench_epoch(bench, device, impls, budget)
    write_report(out, meta, rows, epoch_rows)
    return {**meta, "steps": rows, "epoch": epoch_rows}


if __name__ == "__main__":
    main()
