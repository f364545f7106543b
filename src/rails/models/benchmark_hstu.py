"""HSTU-large training steps: materialising PyTorch attention vs the fused Triton kernel (``scripts/bench_hstu.py``).

For each sequence length :func:`bench_lengths` times encoder forward + backward + AdamW on full-length random
sequences with the same batch for both attention paths and records the peak memory; a path that runs out of
memory is recorded as ``OOM`` and the other is still timed. :func:`bench_epoch` estimates one ML-1M-sized
epoch (6,040 users, lengths 20..200 like ML-1M, batch 128, 128 uniform negatives, full ``RetrievalModule``
loss). Everything is time-boxed by a :class:`Budget` (measurements not started in time are ``skipped``);
:func:`write_report` writes ``<out>.md`` / ``<out>.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rails.batch import SequenceBatch
from rails.io import atomic_write
from rails.models.benchmark import hstu_large, random_batch, synchronize, time_steps
from rails.models.encoders.base import SequenceHistory
from rails.models.encoders.hstu import HSTU

IMPLS = ("torch", "triton")
ML1M_USERS, ML1M_ITEMS = 6040, 3953
DEFAULT_BATCHES = {200: 655, 1024: 128, 4096: 8}  # 131k tokens up to N = 1024, 32k at 4096


@dataclass(frozen=True)
class HSTUBench:
    """What to measure: lengths and their batch sizes, timed/warm-up steps, precision, toy model or HSTU-large."""

    lengths: Sequence[int]
    batch_sizes: Sequence[int]
    steps: int = 3
    warmup: int = 1
    precision: str = "bf16-mixed"
    tiny: bool = False


def batch_sizes(lengths: Sequence[int], tokens: int, explicit: Sequence[int] | None, tiny: bool) -> list[int]:
    """One batch size per length: ``explicit``, else 655 / 128 / 8 at N = 200 / 1024 / 4096, else tokens // N.

    Raises:
        ValueError: ``explicit`` does not give one value per length.
    """
    if explicit is not None:
        if len(explicit) != len(lengths):
            raise ValueError(
                f"--batch-sizes needs one value per length {list(lengths)}, got {list(explicit)}"
            )
        return list(explicit)
    return [max(1, tokens // n) if tiny else DEFAULT_BATCHES.get(n, max(1, tokens // n)) for n in lengths]


class Budget:
    """Wall-clock budget of a whole benchmark run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def exhausted(self) -> bool:
        return time.perf_counter() - self.start > self.seconds


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def encoder_step(
    model: HSTU, batch: SequenceBatch, device: torch.device, precision: str
) -> Callable[[], None]:
    """One encoder training step: forward, a loss on every valid output, backward, AdamW."""
    table = torch.nn.Embedding(ML1M_ITEMS, model.dim).to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), *table.parameters()], lr=1e-3, betas=(0.9, 0.98))
    mask = batch.valid_mask
    history = SequenceHistory.of(batch)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = model(table(batch.history_ids), history)
            loss = (out[mask].float() * table(batch.next_ids())[mask].float()).sum()
        loss.backward()
        optimizer.step()

    return step


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def bench_one(bench: HSTUBench, device: torch.device, impl: str, n: int, batch_size: int) -> tuple | str:
    """(ms per step, peak GiB) of one attention path at one length, or ``"OOM"``."""
    torch.manual_seed(0)
    model = hstu_large(n, bench.tiny).to(device).train()
    model.set_attention_impl(impl)  # type: ignore[arg-type]
    batch = random_batch(torch.full((batch_size,), n), n, ML1M_ITEMS, device)
    try:
        timing = time_steps(
            encoder_step(model, batch, device, bench.precision), device, bench.warmup, bench.steps
        )
        return timing.mean_ms, timing.peak_gib
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not is_oom(error):
            raise
        return "OOM"
    finally:
        del model, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_lengths(
    bench: HSTUBench,
    device: torch.device,
    impls: Sequence[str],
    budget: Budget,
    on_row: Callable[[list[dict]], None] = lambda rows: None,
) -> list[dict]:
    """One row per length (``seq_len``, ``batch_size``, ``<impl>_ms``, ``<impl>_peak_gib``, ``speedup``);
    ``on_row(rows)`` after every measurement (incremental report)."""
    rows: list[dict] = []
    for n, batch_size in zip(bench.lengths, bench.batch_sizes, strict=True):
        row: dict = {"seq_len": n, "batch_size": batch_size}
        rows.append(row)
        # Triton first: at long N the torch path is the one that may OOM or eat the budget.
        for impl in sorted(impls, key=lambda i: i != "triton"):
            if budget.exhausted():
                row[f"{impl}_ms"] = row[f"{impl}_peak_gib"] = "skipped (time budget)"
                continue
            value = bench_one(bench, device, impl, n, batch_size)
            row[f"{impl}_ms"] = value[0] if isinstance(value, tuple) else value
            row[f"{impl}_peak_gib"] = value[1] if isinstance(value, tuple) else value
            if all(isinstance(row.get(f"{i}_ms"), float) for i in IMPLS):
                row["speedup"] = row["torch_ms"] / row["triton_ms"]
            on_row(rows)
        print(row, flush=True)
    return rows


def bench_epoch(bench: HSTUBench, device: torch.device, impls: Sequence[str], budget: Budget) -> list[dict]:
    """Time one epoch of the full ``RetrievalModule`` loss on ML-1M-sized random data, per attention path."""
    from rails.models.losses.negatives import UniformNegatives
    from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
    from rails.models.retrieval_module import RetrievalModule
    from rails.models.similarity.dot_product import DotProductSimilarity

    torch.manual_seed(0)
    users, n, batch_size = (64, 32, 16) if bench.tiny else (ML1M_USERS, 200, 128)
    generator = torch.Generator().manual_seed(0)
    # ML-1M: every user has >= 20 ratings and most exceed the 200-item window (mean history ~165).
    lengths = torch.clamp(20 + torch.distributions.Exponential(1 / 180).sample((users,)).long(), max=n)
    lengths = lengths[torch.randperm(users, generator=generator)]
    rows = []
    for impl in impls:
        row = {"impl": impl, "users": users, "batch_size": batch_size, "steps": 0, "epoch_s": None}
        if budget.exhausted():
            rows.append(row)
            continue
        torch.manual_seed(0)
        encoder = hstu_large(n, bench.tiny)
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
            random_batch(lengths[i : i + batch_size], n, ML1M_ITEMS, device)
            for i in range(0, users, batch_size)
        ]

        def run_epoch(chunk: list[SequenceBatch], module: Any = module, optimizer: Any = optimizer) -> None:
            for batch in chunk:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, bench.precision):
                    loss, _ = module.training_loss(batch)
                loss.backward()
                optimizer.step()

        run_epoch(batches[: bench.warmup])
        synchronize(device)
        start = time.perf_counter()
        run_epoch(batches)
        synchronize(device)
        rows.append({**row, "steps": len(batches), "epoch_s": time.perf_counter() - start})
        print(rows[-1], flush=True)
    return rows


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def write_report(out: Path, meta: dict, rows: list[dict], epoch_rows: list[dict]) -> None:
    """Write ``<out>.json`` (``meta`` + ``steps`` + ``epoch``) and the ``<out>.md`` tables, atomically."""
    atomic_write(
        out.with_suffix(".json"), json.dumps({**meta, "steps": rows, "epoch": epoch_rows}, indent=2) + "\n"
    )
    lines = [
        "# HSTU-large training step: materialised PyTorch attention vs fused Triton kernel",
        "",
        f"Device: {meta['device_name']} · date {meta['date']} · torch {meta['torch']} · precision {meta['precision']}"
        f" · model {meta['model']}",
        "Produced by `python scripts/bench_hstu.py` (encoder forward + backward + AdamW on full-length sequences;",
        f"same batch for both paths; mean of {meta['timed_steps']} steps after {meta['warmup_steps']} warm-up; "
        "OOM = out of memory).",
        "",
        "| N | batch | torch ms/step | triton ms/step | speedup | torch peak GiB | triton peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seq_len']} | {row['batch_size']} | {_fmt(row.get('torch_ms'))} | {_fmt(row.get('triton_ms'))} | "
            f"{_fmt(row.get('speedup', 'n/a'), 2)} | {_fmt(row.get('torch_peak_gib'), 2)} | "
            f"{_fmt(row.get('triton_peak_gib'), 2)} |"
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
                f"| {row['impl']} | {row['users']} | {row['batch_size']} | {row['steps']} | {_fmt(row['epoch_s'], 2)} |"
            )
    atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")
