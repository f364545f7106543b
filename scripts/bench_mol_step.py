"""Training-step time of HSTU-large with a MoL 8x4x64 head vs a dot-product head (issue #4 acceptance: <= 1.5x).

One step = encoder forward over every history position, positive and R-negative head calls, sampled-softmax
loss + weighted aux losses, backward, AdamW step (``RetrievalModule.training_loss``, no Lightning/Hydra).
Shapes default to ML-1M: batch 128, N 200, R 128, D 50, 3,706 items, HSTU-large 8 blocks x 2 heads x 25/25,
history lengths uniform in [20, N] (``--full-length`` for all N). Timings use CUDA synchronisation, warm-up
steps, then the mean / std over timed steps. Results go to ``docs/bench_mol.md``.

Examples:
    python scripts/bench_mol_step.py                       # GPU: fp32 (TF32) and bf16 autocast, all variants
    python scripts/bench_mol_step.py --tiny                # CPU smoke run with tiny shapes
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rails.batch import SequenceBatch
from rails.models.encoders.hstu import HSTU
from rails.models.losses import SampledSoftmaxLoss, UniformNegatives
from rails.models.retrieval_module import RetrievalModule
from rails.models.similarity import DotProductSimilarity, MoLSimilarity
from rails.runs.record import git_commit

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shapes:
    """Benchmark sizes."""

    batch: int
    seq_len: int
    negatives: int
    dim: int
    num_items: int
    blocks: int
    heads: int
    head_dim: int
    mol: tuple[int, int, int]  # P_Q, P_X, d_P
    mol_hidden: int  # query MLP width
    gating_hidden: int


FULL = Shapes(128, 200, 128, 50, 3707, 8, 2, 25, (8, 4, 64), 512, 128)
TINY = Shapes(4, 12, 8, 16, 50, 2, 1, 8, (4, 2, 8), 16, 8)


def make_batch(shapes: Shapes, full_length: bool, device: torch.device, seed: int = 0) -> SequenceBatch:
    """Random histories (ids >= 1, increasing timestamps) with ML-1M-like lengths."""
    g = torch.Generator().manual_seed(seed)
    b, n = shapes.batch, shapes.seq_len
    low = min(20, n)
    lengths = torch.full((b,), n) if full_length else torch.randint(low, n + 1, (b,), generator=g)
    valid = torch.arange(n)[None, :] < lengths[:, None]
    ids = torch.randint(1, shapes.num_items, (b, n), generator=g) * valid
    timestamps = (1_000_000 + torch.randint(1, 10_000, (b, n), generator=g).cumsum(1)) * valid
    batch = SequenceBatch(
        user_ids=torch.arange(1, b + 1),
        history_ids=ids,
        history_timestamps=timestamps,
        history_ratings=valid.float() * 4,
        lengths=lengths,
        target_ids=torch.randint(1, shapes.num_items, (b,), generator=g),
        target_timestamps=timestamps.max(1).values + 100,
        target_ratings=torch.full((b,), 4.0),
    )
    return batch.to(device)


def make_module(shapes: Shapes, head: str, device: torch.device) -> RetrievalModule:
    """HSTU-large + the requested head ("dot", "mol", "mol_compiled"), paper settings for each."""
    mol = head.startswith("mol")
    encoder = HSTU(
        dim=shapes.dim,
        max_seq_len=shapes.seq_len,
        num_blocks=shapes.blocks,
        num_heads=shapes.heads,
        qk_dim=shapes.head_dim,
        v_dim=shapes.head_dim,
        output_norm="layer_norm" if mol else "l2",
    )
    if mol:
        p_q, p_x, d_p = shapes.mol
        similarity = MoLSimilarity(
            query_dim=shapes.dim,
            item_dim=shapes.dim,
            num_query_components=p_q,
            num_item_components=p_x,
            component_dim=d_p,
            query_hidden_dim=shapes.mol_hidden,
            uid_hash_sizes=[6040],
            gating_query_hidden_dim=shapes.gating_hidden,
            gating_item_hidden_dim=shapes.gating_hidden,
            gating_qi_hidden_dim=shapes.gating_hidden,
            compile_mixing=head == "mol_compiled",
        )
        weights = {"mi_loss": 1e-3, "uid_embedding_l2_norm": 0.1}
    else:
        similarity, weights = DotProductSimilarity(), {}
    module = RetrievalModule(
        encoder,
        similarity,
        SampledSoftmaxLoss(temperature=1.0 if mol else 0.05),
        UniformNegatives(shapes.negatives),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3),
        num_items=shapes.num_items,
        item_dim=shapes.dim,
        aux_loss_weights=weights,
    ).to(device)
    module.set_corpus(torch.arange(1, shapes.num_items, device=device))
    return module.train()


def time_steps(
    step: Callable[[], None], device: torch.device, warmup: int, iters: int
) -> tuple[float, float, list[float]]:
    """Mean and std (ms) of ``iters`` synchronised calls after ``warmup`` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.fmean(times), (statistics.stdev(times) if len(times) > 1 else 0.0), times


def bench(shapes: Shapes, head: str, precision: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    module = make_module(shapes, head, device)
    optimizer = module.configure_optimizers()
    batch = make_batch(shapes, args.full_length, device)
    autocast = precision == "bf16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            total, _ = module.training_loss(batch)
        total.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mean, std, _ = time_steps(step, device, args.warmup, args.iters)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    positions = int(batch.lengths.sum())
    return {
        "head": head,
        "precision": precision,
        "mean_ms": mean,
        "std_ms": std,
        "peak_gib": peak,
        "M": positions,
    }


def render(rows: list[dict], shapes: Shapes, args: argparse.Namespace, device_name: str, command: str) -> str:
    lines = [
        "# MoL vs dot-product training step (HSTU-large)",
        "",
        f"Written by `scripts/bench_mol_step.py` on {dt.datetime.now().isoformat(timespec='seconds')}, "
        f"device: **{device_name}**, torch {torch.__version__}, commit `{git_commit(REPO_ROOT) or 'unknown'}`.",
        "",
        f"Command: `{command}`",
        "",
        f"Shapes: batch {shapes.batch}, N {shapes.seq_len}, R {shapes.negatives}, D {shapes.dim}, "
        f"{shapes.num_items - 1} items, HSTU {shapes.blocks} blocks x {shapes.heads} heads x "
        f"{shapes.head_dim}/{shapes.head_dim}; MoL {'x'.join(map(str, shapes.mol))} (query MLP "
        f"{shapes.mol_hidden}, gating {shapes.gating_hidden}, one uid component); history lengths "
        f"{'all N' if args.full_length else 'uniform in [min(20, N), N]'} (M = supervised positions). "
        f"Step = forward + backward + AdamW; {args.warmup} warm-up, {args.iters} timed steps.",
        "",
        "| head | precision | M | step ms (mean ± std) | x dot (same precision) | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    dot = {r["precision"]: r["mean_ms"] for r in rows if r["head"] == "dot"}
    for r in rows:
        ratio = r["mean_ms"] / dot[r["precision"]] if r["precision"] in dot else float("nan")
        lines.append(
            f"| {r['head']} | {r['precision']} | {r['M']} | {r['mean_ms']:.2f} ± {r['std_ms']:.2f} | "
            f"{ratio:.2f} | {r['peak_gib']:.2f} |"
        )
    lines += [
        "",
        "Acceptance (issue #4): MoL step <= 1.5x the dot-product step on one H100/H200. "
        + ("CPU/tiny numbers say nothing about it." if args.tiny or device_name == "cpu" else ""),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, CPU-friendly smoke run")
    parser.add_argument("--heads", nargs="+", default=None, help="subset of: dot mol mol_compiled")
    parser.add_argument("--precisions", nargs="+", default=None, help="subset of: fp32 bf16")
    parser.add_argument("--full-length", action="store_true", help="every history has N valid positions")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "bench_mol.md")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shapes = TINY if args.tiny else FULL
    heads = args.heads or (["dot", "mol"] + (["mol_compiled"] if cuda else []))
    precisions = args.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    args.iters = args.iters if args.iters is not None else (3 if args.tiny else 20)
    torch.backends.cuda.matmul.allow_tf32 = True  # the paper trains with TF32 on
    torch.backends.cudnn.allow_tf32 = True
    rows = []
    for precision in precisions:
        for head in heads:
            row = bench(shapes, head, precision, args, device)
            print(
                f"{head:>13} {precision}: {row['mean_ms']:.2f} ± {row['std_ms']:.2f} ms "
                f"(M={row['M']}, peak {row['peak_gib']:.2f} GiB)",
                flush=True,
            )
            rows.append(row)
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    command = " ".join(["python", "scripts/bench_mol_step.py", *sys.argv[1:]])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(rows, shapes, args, device_name, command.strip()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
