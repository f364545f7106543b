"""Training-step time of HSTU-large with a MoL 8x4x64 head vs a dot-product head (issue #4 acceptance: <= 1.5x).

One step = encoder forward over every history position, positive and R-negative head calls, sampled-softmax
loss + weighted aux losses, backward, AdamW step (``RetrievalModule.training_loss``, no Lightning/Hydra).
Shapes default to ML-1M: batch 128, N 200, R 128, D 50, 3,706 items, HSTU-large 8 blocks x 2 heads x 25/25,
history lengths uniform in [20, N] (``--full-length`` for all N). Timings use CUDA synchronisation, warm-up
steps, then the mean / std over timed steps. Results go to ``docs/bench_mol.json`` (every row of the run) and
``docs/bench_mol.md`` (rendered from that JSON only). ``--count-ops`` adds the profiler's op counts per phase
(forward / backward / optimizer) of one more step. A command line over :mod:`rails.models.benchmark`.

Examples:
    python scripts/bench_mol_step.py --count-ops           # GPU: dot, MoL, MoL compiled mixing; fp32 + bf16
    python scripts/bench_mol_step.py --variants eager compiled   # + compiled encoder and fused AdamW
    python scripts/bench_mol_step.py --tiny                # CPU smoke run with tiny shapes
    python scripts/bench_mol_step.py --render              # docs/bench_mol.md again from docs/bench_mol.json
    python scripts/bench_mol_step.py --pending "why"       # no measurement: JSON without rows + the note
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from rails.io import atomic_write
from rails.models.benchmark import FULL, TINY, bench_head_step
from rails.models.benchmark_report import head_step_markdown, head_step_report
from rails.models.step_profile import drop_annotations
from rails.runs.record import git_commit

REPO_ROOT = Path(__file__).resolve().parents[1]


def markdown(report: dict) -> str:
    """The page of a report; kernel tables stored before user annotations were filtered lose those rows."""
    rows = [{**r, "profile": drop_annotations(r["profile"])} if "profile" in r else r for r in report["rows"]]
    return head_step_markdown({**report, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, CPU-friendly smoke run")
    parser.add_argument(
        "--heads",
        nargs="+",
        default=None,
        help="subset of: dot mol mol_compiled mol_compiled_head mol_bf16_head mol_fused mol_dot_loss",
    )
    parser.add_argument("--precisions", nargs="+", default=None, help="subset of: fp32 bf16")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["eager"],
        help="subset of: eager compiled graphs captured (compiled = torch.compile'd encoder + fused AdamW; "
        "graphs = the same in CUDA graphs, compile mode reduce-overhead; captured = the whole eager step "
        "replayed from one CUDA graph, no launch overhead: CUDA only)",
    )
    parser.add_argument("--full-length", action="store_true", help="every history has N valid positions")
    parser.add_argument(
        "--profile-kernels",
        action="store_true",
        help="per row, the device-busy time and top kernels of five more steps (torch.profiler)",
    )
    parser.add_argument(
        "--count-ops", action="store_true", help="profiler op counts per phase (one more step)"
    )
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "bench_mol.md", help="markdown")
    parser.add_argument("--render", action="store_true", help="only re-render the markdown from its JSON")
    parser.add_argument(
        "--pending", default=None, help="measure nothing: write a JSON without rows + this note"
    )
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("rails").setLevel(logging.INFO)  # e.g. which fused-mixture backward was chosen, and why
    json_path = args.output.with_suffix(".json")
    if args.render:
        if not json_path.is_file():
            raise SystemExit(f"--render needs {json_path} (written by a measuring run)")
        atomic_write(args.output, markdown(json.loads(json_path.read_text())))
        print(f"wrote {args.output}")
        return
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shapes = TINY if args.tiny else FULL
    heads = args.heads or (["dot", "mol"] + (["mol_compiled"] if cuda else []))
    precisions = args.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    iters = args.iters if args.iters is not None else (3 if args.tiny else 20)
    torch.backends.cuda.matmul.allow_tf32 = True  # the paper trains with TF32 on
    torch.backends.cudnn.allow_tf32 = True
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    argv = sys.argv[1:]
    if args.pending:  # the page names the measuring command, not this one
        argv = ["--count-ops"]
    command = " ".join(["python", "scripts/bench_mol_step.py", *argv]).strip()

    def write(rows: list[dict]) -> None:
        """The JSON and markdown of the rows so far (rewritten after every row: a cut run keeps them)."""
        report = head_step_report(
            rows,
            shapes,
            device_name="not measured" if args.pending else device_name,
            command=command,
            commit=git_commit(REPO_ROOT),
            warmup=warmup,
            iters=iters,
            full_length=args.full_length,
            tiny=args.tiny,
            note=args.pending or "",
        )
        atomic_write(json_path, json.dumps(report, indent=1) + "\n")
        atomic_write(args.output, markdown(report))

    rows: list[dict] = []
    runs = [(p, v, h) for p in precisions for v in args.variants for h in heads]
    for precision, variant, head in [] if args.pending else runs:
        try:
            row = bench_head_step(
                shapes,
                head,
                precision,
                device,
                warmup,
                iters,
                args.full_length,
                args.count_ops,
                variant,
                args.profile_kernels,
            )
        except (
            Exception
        ) as error:  # e.g. a compile failure: keep the other rows, record why this one is missing
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            print(f"{head:>13} {precision} {variant}: FAILED {message}", flush=True)
            row = {"head": head, "precision": precision, "variant": variant, "error": message}
        else:
            ops = f", ops {row['forward_ops']}/{row['backward_ops']}" if args.count_ops else ""
            print(
                f"{head:>13} {precision} {variant}: {row['mean_ms']:.2f} ± {row['std_ms']:.2f} ms "
                f"(M={row['M']}, peak {row['peak_gib']:.2f} GiB{ops})",
                flush=True,
            )
        rows.append(row)
        write(rows)
    write(rows)
    print(f"wrote {json_path} and {args.output}")


if __name__ == "__main__":
    main()
