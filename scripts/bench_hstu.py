"""Benchmark HSTU-large training steps: materialising PyTorch attention vs the fused Triton kernel.

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
import contextlib
import datetime
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rails.batch import SequenceBatch
from rails.kernels import triton_usable
from rails.models.encoders.base import SequenceHistory
from rails.models.encoders.hstu import HSTU

IMPLS = ("torch", "triton")
ML1M_USERS, ML1M_ITEMS = 6040, 3953


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


def hstu_large(max_seq_len: int, tiny: bool) -> HSTU:
    """RAILS HSTU-large ML-1M sizes (D 50, 8 blocks, 2 heads, d_qk = d_v = 25), or a 2-block toy."""
    if tiny:
        return HSTU(dim=16, max_seq_len=max_seq_len, num_blocks=2, num_heads=2, qk_dim=8, v_dim=8)
    return HSTU(dim=50, max_seq_len=max_seq_len, num_blocks=8, num_heads=2, qk_dim=25, v_dim=25)


def synthetic_batch(lengths: torch.Tensor, n: int, num_items: int, device: torch.device) -> SequenceBatch:
    """Random ids and increasing timestamps, right-padded to N."""
    b = lengths.shape[0]
    valid = torch.arange(n)[None, :] < lengths[:, None]
    times = 978_300_000 + torch.randint(1, 100_000, (b, n + 1)).cumsum(1)
    return SequenceBatch(
        user_ids=torch.arange(b),
        history_ids=torch.randint(1, num_items, (b, n)) * valid,
        history_timestamps=times[:, :n] * valid,
        history_ratings=valid.float(),
        lengths=lengths,
        target_ids=torch.randint(1, num_items, (b,)),
        target_timestamps=times[torch.arange(b), lengths],
        target_ratings=torch.ones(b),
    ).to(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], None], device: torch.device, warmup: int, steps: int
) -> tuple[float, float]:
    """(mean ms per step, peak allocated GiB; nan on CPU)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    elapsed = (time.perf_counter() - start) / steps * 1e3
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    return elapsed, peak


def encoder_step(
    model: HSTU, batch: SequenceBatch, device: torch.device, precision: str
) -> Callable[[], None]:
    """One encoder training step: forward, a loss on every valid output, backward, AdamW."""
    table = torch.nn.Embedding(ML1M_ITEMS, model.dim).to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), *table.parameters()], lr=1e-3, betas=(0.9, 0.98))
    mask = batch.valid_mask

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = model(table(batch.history_ids), SequenceHistory.of(batch))
            loss = (out[mask].float() * table(batch.next_ids())[mask].float()).sum()
        loss.backward()
        optimizer.step()

    return step


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


DEFAULT_BATCHES = {200: 655, 1024: 128, 4096: 8}


def batch_sizes(args: argparse.Namespace) -> list[int]:
    """One batch size per ``--lengths`` entry (see ``--batch-sizes``)."""
    if args.batch_sizes is not None:
        if len(args.batch_sizes) != len(args.lengths):
            raise SystemExit(
                f"--batch-sizes needs one value per length {args.lengths}, got {args.batch_sizes}"
            )
        return list(args.batch_sizes)
    return [
        DEFAULT_BATCHES.get(n, max(1, args.tokens // n)) if not args.tiny else max(1, args.tokens // n)
        for n in args.lengths
    ]


class Budget:
    """Wall-clock budget of the whole run (``--max-seconds``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def exhausted(self) -> bool:
        return time.perf_counter() - self.start > self.seconds


def bench_one(
    args: argparse.Namespace, device: torch.device, impl: str, n: int, batch_size: int
) -> tuple | str:
    """(ms per step, peak GiB) of one path at one length, or "OOM"."""
    torch.manual_seed(0)
    model = hstu_large(n, args.tiny).to(device).train()
    model.set_attention_impl(impl)  # type: ignore[arg-type]
    batch = synthetic_batch(torch.full((batch_size,), n), n, ML1M_ITEMS, device)
    try:
        return time_steps(encoder_step(model, batch, device, args.precision), device, args.warmup, args.steps)
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not is_oom(error):
            raise
        return "OOM"
    finally:
        del model, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_lengths(
    args: argparse.Namespace,
    device: torch.device,
    impls: list[str],
    budget: Budget,
    on_row: Callable[[list[dict]], None],
) -> list[dict]:
    """One row per length; ``on_row(rows)`` after every measurement (incremental report)."""
    rows: list[dict] = []
    for n, batch_size in zip(args.lengths, batch_sizes(args)):
        row: dict = {"seq_len": n, "batch_size": batch_size}
        rows.append(row)
        # Triton first: at long N the torch path is the one that may OOM or eat the budget.
        for impl in sorted(impls, key=lambda i: i != "triton"):
            if budget.exhausted():
                row[f"{impl}_ms"] = row[f"{impl}_peak_gib"] = "skipped (time budget)"
                continue
            value = bench_one(args, device, impl, n, batch_size)
            row[f"{impl}_ms"] = value[0] if isinstance(value, tuple) else value
            row[f"{impl}_peak_gib"] = value[1] if isinstance(value, tuple) else value
            if all(isinstance(row.get(f"{i}_ms"), float) for i in IMPLS):
                row["speedup"] = row["torch_ms"] / row["triton_ms"]
            on_row(rows)
        print(row, flush=True)
    return rows


def bench_epoch(
    args: argparse.Namespace, device: torch.device, impls: list[str], budget: Budget
) -> list[dict]:
    """Time one epoch of the full RetrievalModule loss on ML-1M-sized synthetic data."""
    from rails.models.losses.negatives import UniformNegatives
    from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
    from rails.models.retrieval_module import RetrievalModule
    from rails.models.similarity.dot_product import DotProductSimilarity

    torch.manual_seed(0)
    users, n, batch_size = (64, 32, 16) if args.tiny else (ML1M_USERS, 200, 128)
    generator = torch.Generator().manual_seed(0)
    # ML-1M: every user has >= 20 ratings and most exceed the 200-item window (mean history ~165).
    lengths = torch.clamp(20 + torch.distributions.Exponential(1 / 180).sample((users,)).long(), max=n)
    lengths = lengths[torch.randperm(users, generator=generator)]
    rows = []
    for impl in impls:
        if budget.exhausted():
            rows.append({"impl": impl, "users": users, "batch_size": batch_size, "steps": 0, "epoch_s": None})
            continue
        torch.manual_seed(0)
        encoder = hstu_large(n, args.tiny)
        encoder.set_attention_impl(impl)  # type: ignore[arg-type]
        module = RetrievalModule(
            encoder=encoder,
            similarity=DotProductSimilarity(),
            loss=SampledSoftmaxLoss(0.05),
            negatives=UniformNegatives(128),
            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3),
            num_items=ML1M_ITEMS,
            item_dim=encoder.dim,
        ).to(device)
        module.set_corpus(torch.arange(1, ML1M_ITEMS))
        optimizer = module.configure_optimizers()
        batches = [
            synthetic_batch(lengths[i : i + batch_size], n, ML1M_ITEMS, device)
            for i in range(0, users, batch_size)
        ]

        def run_epoch(
            chunk: list[SequenceBatch],
            module: RetrievalModule = module,
            optimizer: torch.optim.Optimizer = optimizer,
        ) -> None:
            for batch in chunk:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, args.precision):
                    loss, _ = module.training_loss(batch)
                loss.backward()
                optimizer.step()

        run_epoch(batches[: args.warmup])
        synchronize(device)
        start = time.perf_counter()
        run_epoch(batches)
        synchronize(device)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "impl": impl,
                "users": users,
                "batch_size": batch_size,
                "steps": len(batches),
                "epoch_s": seconds,
            }
        )
        print(rows[-1], flush=True)
    return rows


def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def write_report(out: Path, meta: dict, rows: list[dict], epoch_rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({**meta, "steps": rows, "epoch": epoch_rows}, indent=2) + "\n"
    )
    lines = [
        "# HSTU-large training step: materialised PyTorch attention vs fused Triton kernel",
        "",
        f"Device: {meta['device_name']} · date {meta['date']} · torch {meta['torch']} · precision {meta['precision']}"
        f" · model {meta['model']}",
        "Produced by `python scripts/bench_hstu.py` (encoder forward + backward + AdamW on full-length sequences;",
        f"same batch for both paths; mean of {meta['timed_steps']} steps after {meta['warmup_steps']} warm-up; OOM = out of memory).",
        "",
        "| N | batch | torch ms/step | triton ms/step | speedup | torch peak GiB | triton peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seq_len']} | {row['batch_size']} | {fmt(row.get('torch_ms'))} | {fmt(row.get('triton_ms'))} | "
            f"{fmt(row.get('speedup', 'n/a'), 2)} | {fmt(row.get('torch_peak_gib'), 2)} | "
            f"{fmt(row.get('triton_peak_gib'), 2)} |"
        )
    if epoch_rows:
        lines += [
            "",
            "## One ML-1M-sized epoch (full RetrievalModule loss, 128 negatives, no data loading)",
            "",
            "| attention | users | batch | steps | epoch s |",
            "|---|---|---|---|---|",
        ]
        for row in epoch_rows:
            lines.append(
                f"| {row['impl']} | {row['users']} | {row['batch_size']} | {row['steps']} | {fmt(row['epoch_s'], 2)} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available (use --device cpu --tiny for a smoke test)")
    if args.tiny and args.lengths == [200, 1024, 4096]:
        args.lengths, args.tokens, args.steps, args.warmup = [16, 32], 64, 2, 1
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
    rows = bench_lengths(args, device, impls, budget, lambda done: write_report(out, meta, done, []))
    epoch_rows = [] if args.no_epoch else bench_epoch(args, device, impls, budget)
    write_report(out, meta, rows, epoch_rows)
    return {**meta, "steps": rows, "epoch": epoch_rows}


if __name__ == "__main__":
    main()
