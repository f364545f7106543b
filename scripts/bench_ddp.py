"""The N-GPU DDP check of issue #14: a command line over :mod:`rails.runs.ddp_bench` and its report module.

``run`` trains the preset for ``--epochs`` epochs on 1 GPU and on ``--gpus`` GPUs at each ``--global-batches``
size (the first is the headline), evaluates the N-GPU run's best checkpoint with ``rails-eval`` on 1 GPU,
writes ``--json`` after every batch size and, with ``--markdown``, the DDP section of that file. ``render``
regenerates the section from a JSON (e.g. docs/bench_ddp.json fetched from the GPU machine).
Anything after ``--`` is passed to both ``rails-train`` runs as overrides.

Examples:
    python scripts/bench_ddp.py run --json docs/bench_ddp.json --markdown docs/benchmarks.md -- \\
        data.root=$PWD/.devdata                                  # 2 GPUs (scripts/launch_ddp_check.sh)
    python scripts/bench_ddp.py render --json docs/bench_ddp.json --markdown docs/benchmarks.md
    python scripts/bench_ddp.py run --experiment quickstart --trainer-one cpu --trainer-many ddp_sim \\
        --epochs 2 --global-batches 32 --json /tmp/ddp.json     # CPU smoke test (2 gloo processes)
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from rails.runs.ddp_bench import BenchSettings, bench
from rails.runs.ddp_bench_report import load_summary, render, update_section


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train on 1 and N devices, compare, write the JSON (and markdown)")
    run.add_argument("--experiment", default=BenchSettings.experiment)
    run.add_argument("--gpus", type=int, default=BenchSettings.gpus)
    run.add_argument(
        "--epochs", type=int, default=BenchSettings.epochs, help="per run; the first is not timed"
    )
    run.add_argument(
        "--global-batches",
        default=",".join(map(str, BenchSettings.global_batches)),
        help="comma-separated global batch sizes of the strong-scaling points ('' for none)",
    )
    run.add_argument(
        "--per-gpu-batches",
        default="",
        help="comma-separated per-GPU batch sizes of the weak-scaling points, measured first (the first point "
        "measured is the headline)",
    )
    run.add_argument("--trainer-one", default=BenchSettings.trainer_one)
    run.add_argument("--trainer-many", default=BenchSettings.trainer_many)
    run.add_argument("--matmul-precision", default=BenchSettings.matmul_precision)
    run.add_argument("--max-seconds", type=float, help="time budget; finished batch sizes are kept")
    run.add_argument("--out", default="logs/bench_ddp", help="folder of the run directories")
    run.add_argument("--json", required=True, help="summary JSON (rewritten after every batch size)")
    run.add_argument("--markdown", help="markdown file whose DDP section is regenerated")
    run.add_argument(
        "--launched-by", help="the command that started this one (recorded as the headline command)"
    )
    show = sub.add_parser("render", help="regenerate the DDP section of a markdown file from a JSON")
    show.add_argument("--json", required=True)
    show.add_argument("--markdown", required=True)
    return parser.parse_args(argv), overrides


def _integers(option: str, text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"{option}: not a list of integers: {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    raw = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(raw)
    if args.command == "run":
        batches = _integers("--global-batches", args.global_batches)
        per_gpu = _integers("--per-gpu-batches", args.per_gpu_batches)
        try:
            settings = BenchSettings(
                experiment=args.experiment,
                gpus=args.gpus,
                epochs=args.epochs,
                global_batches=batches,
                per_gpu_batches=per_gpu,
                trainer_one=args.trainer_one,
                trainer_many=args.trainer_many,
                matmul_precision=args.matmul_precision,
                overrides=overrides,
                max_seconds=args.max_seconds,
            )
        except ValueError as error:
            raise SystemExit(f"bench_ddp.py run: {error}") from None
        command = args.launched_by or shlex.join(["python", "scripts/bench_ddp.py", *raw])
        bench(settings, args.out, args.json, command=command)
    if args.markdown:
        update_section(args.markdown, render(load_summary(args.json)))
    print(render(load_summary(args.json)))


if __name__ == "__main__":
    main()
