"""Recall-vs-latency benchmark of exact and approximate top-k for Mixture-of-Logits heads (``scripts/bench_topk.py``).

On a :class:`~rails.retrieval.benchmark_data.Problem` (a MoL head, its corpus state and a query sampler)
every index (plain-PyTorch chunked brute force = the reference row, fused Triton exact search on CUDA at its
default and at explicit tile settings, PerComponentTopK / AverageTopK / CombinedTopK at several budgets,
faiss candidate stages when faiss is importable) is built through the index contract, timed on batches of
queries (median over ``runs`` calls after ``warmup``; CUDA events on GPU) and its recall@k against the exact
top-k is measured on the same queries. The roofline floor of exact search (bytes streamed, FLOPs) is stated
per row, and every row's speed-up vs both the reference and the fused exact search of the same run, and how
many queries an approximate index answered by exact fallback. :func:`write_results` writes
``bench_topk.{md,json,csv}`` (and ``.png`` with matplotlib).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rails.io import atomic_write
from rails.retrieval.benchmark_data import Problem
from rails.retrieval.indexes import AverageTopK, CombinedTopK, ExactTopK, PerComponentTopK, RetrievalIndex
from rails.retrieval.metrics import recall_at_k
from rails.retrieval.mips import FaissMIPS, TorchMIPS

# Peak dense bf16 tensor FLOP/s and HBM bytes/s (public spec sheets; docs/../peers.md §3).
PEAKS = {"H100": (989.4e12, 3.35e12), "H200": (989.4e12, 4.8e12)}

IndexFactory = Callable[[], RetrievalIndex]


@dataclass
class Row:
    """One benchmark row: an index at one corpus size, setting and batch size."""

    device: str
    data: str
    setting: str
    items: int
    batch: int
    k: int
    index: str
    params: str
    latency_ms: float
    latency_p90_ms: float
    recall: float
    speedup_vs_reference: float
    speedup_vs_fused: float
    fallback_rows: int  # queries short of candidates, answered by exact search (approximate indexes)
    floor_ms: float
    floor_bytes: float
    floor_flops: float


@dataclass(frozen=True)
class BenchSettings:
    """What every problem is measured with (the benchmark's ``--batch-sizes`` ... flags)."""

    batch_sizes: Sequence[int] = (1, 32, 256)
    k: int = 100
    warmup: int = 3
    runs: int = 20
    reference_chunk: int = 65536
    tiny: bool = False  # small approximate budgets (CPU smoke runs)


@dataclass(frozen=True)
class FusedTopKConfig:
    """Tile settings of the fused exact kernel for tuning rows: items per tile and corpus splits per query."""

    block_x: int | None = None
    num_splits: int | None = None

    def index(self) -> ExactTopK:
        """The fused exact index at these tile settings."""
        return ExactTopK(fused=True, fused_block_x=self.block_x, fused_num_splits=self.num_splits)


def parse_fused_config(text: str) -> FusedTopKConfig:
    """``X`` or ``XxS`` (items per tile [x corpus splits per query]) -> FusedTopKConfig; ValueError otherwise."""
    try:
        values = [int(v) for v in text.lower().split("x")]
        if not 1 <= len(values) <= 2:
            raise ValueError(text)
    except ValueError as err:
        raise ValueError(f"fused configs look like 128 or 128x264, got {text!r}") from err
    return FusedTopKConfig(block_x=values[0], num_splits=values[1] if len(values) > 1 else None)


def time_call(fn: Callable[[], object], warmup: int, runs: int, device: torch.device) -> list[float]:
    """Milliseconds per call: CUDA events on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000.0 * (time.perf_counter() - t0))
    return times


def roofline(
    pq: int, px: int, dim: int, hidden: int, items: int, batch: int, device_name: str
) -> tuple[float, float, float]:
    """(floor_ms, bytes, flops) of exact search: bf16 item components + item gate streamed once;
    per (query, item): pair logits 2*P*d_P, query-item gating MLP 2*2*P*H, ~8P element-wise."""
    pairs = pq * px
    nbytes = items * (px * dim + pairs) * 2.0
    flops = batch * items * (2.0 * pairs * dim + 4.0 * pairs * hidden + 8.0 * pairs)
    peak = next((v for key, v in PEAKS.items() if key in device_name), None)
    if peak is None:
        return math.nan, nbytes, flops
    return 1000.0 * max(flops / peak[0], nbytes / peak[1]), nbytes, flops


def index_grid(tiny: bool, device: torch.device, with_faiss: bool) -> list[tuple[str, str, IndexFactory]]:
    """(name, params, factory) of every benchmarked approximate index."""
    bf16 = "bfloat16" if device.type == "cuda" else None
    mips = lambda: TorchMIPS(dtype=bf16)  # noqa: E731
    grid: list[tuple[str, str, IndexFactory]] = []
    for kp in [1, 5] if tiny else [5, 10, 50, 100]:
        grid.append(("PerComponentTopK", f"k_per_pair={kp}", lambda kp=kp: PerComponentTopK(kp, mips=mips)))
    for kc in [100, 400] if tiny else [200, 500, 1000, 2000, 4000]:
        grid.append(("AverageTopK", f"num_candidates={kc}", lambda kc=kc: AverageTopK(kc, mips=mips)))
    for kp, kc in [(1, 100)] if tiny else [(5, 200), (50, 500), (100, 1000)]:
        params = f"k_per_pair={kp},num_candidates={kc}"
        grid.append(("CombinedTopK", params, lambda kp=kp, kc=kc: CombinedTopK(kp, kc, mips=mips)))
    if with_faiss:
        for nlist, nprobe in [(8, 2)] if tiny else [(100, 1), (1000, 10)]:
            grid.append(
                (
                    "PerComponentTopK+faiss_ivf",
                    f"k_per_pair=5,nlist={nlist},nprobe={nprobe}",
                    lambda nl=nlist, npr=nprobe: PerComponentTopK(
                        5, mips=lambda: FaissMIPS(index="ivf", nlist=nl, nprobe=npr, fallback=False)
                    ),
                )
            )
    return grid


def bench_problem(
    problem: Problem,
    setting: str,
    num_items: int,
    settings: BenchSettings,
    device: torch.device,
    device_name: str,
    with_faiss: bool,
    fused_configs: Sequence[FusedTopKConfig] = (),
) -> list[Row]:
    """Time every index on one problem for every batch size; recall vs the exact (fused when on CUDA) top-k."""
    head, item_state = problem.head, problem.item_state
    pq, px, dim = head.num_query_components, head.num_item_components, head.component_dim
    hidden = head.mixing().hidden_dim
    label = setting if setting != "checkpoint" else f"checkpoint {pq}x{px}x{dim}"
    reference = ExactTopK(chunk_size=settings.reference_chunk, fused=False).build(head, item_state=item_state)
    exact_rows: list[tuple[str, str, RetrievalIndex]] = [("reference_torch_chunked", "", reference)]
    if device.type == "cuda":
        exact_rows.append(
            ("fused_triton_exact", "", ExactTopK(fused=True).build(head, item_state=item_state))
        )
        for config in fused_configs:
            params = f"block_x={config.block_x},num_splits={config.num_splits}"
            exact_rows.append(
                ("fused_triton_exact", params, config.index().build(head, item_state=item_state))
            )
    approx = [
        (n, p, f().build(head, item_state=item_state))
        for n, p, f in index_grid(settings.tiny, device, with_faiss)
    ]
    rows: list[Row] = []
    for batch in settings.batch_sizes:
        query_state = head.encode_queries(problem.queries(batch, batch))
        _, truth = exact_rows[min(1, len(exact_rows) - 1)][2].search_state(query_state, settings.k)
        floor_ms, nbytes, flops = roofline(pq, px, dim, hidden, num_items, batch, device_name)
        ref_ms = fused_ms = None
        for name, params, index in exact_rows + approx:
            times = time_call(
                lambda i=index, q=query_state: i.search_state(q, settings.k),
                settings.warmup,
                settings.runs,
                device,
            )
            median = statistics.median(times)
            ref_ms = ref_ms or median
            if name == "fused_triton_exact" and not params:
                fused_ms = median
            _, ids = index.search_state(query_state, settings.k)
            row = Row(
                device_name,
                problem.name,
                label,
                num_items,
                batch,
                settings.k,
                name,
                params,
                median,
                sorted(times)[int(0.9 * (len(times) - 1))],
                recall_at_k(ids, truth),
                ref_ms / median,
                (fused_ms / median) if fused_ms else math.nan,
                index.exact_fallback_rows,
                floor_ms,
                nbytes,
                flops,
            )
            rows.append(row)
            print(
                f"{problem.name} {label} X={num_items} B={batch} {name} {params}: {median:.3f} ms, "
                f"recall {row.recall:.4f}, {row.speedup_vs_fused:.1f}x vs fused, {row.fallback_rows} exact fallbacks"
            )
    return rows


def write_results(rows: Sequence[Row], out: Path, device_name: str) -> None:
    """``bench_topk.{json,csv,md}`` (and ``bench_topk.png`` when matplotlib is importable) under ``out``,
    each written atomically."""
    if not rows:
        raise ValueError("write_results: no benchmark rows")
    atomic_write(
        out / "bench_topk.json",
        json.dumps({"device": device_name, "rows": [asdict(r) for r in rows]}, indent=1),
    )
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    atomic_write(out / "bench_topk.csv", table.getvalue())
    lines = [
        "# Top-k retrieval benchmark (scripts/bench_topk.py)",
        "",
        f"Device: **{device_name}**, torch {torch.__version__}. Latency = median ms per query batch (CUDA events "
        "after warm-up); recall = |top-k ∩ exact top-k| / k; speed-ups vs the plain-PyTorch chunked reference row "
        "and vs the fused exact search of the same run; floor = roofline of exact search (bf16 item components + "
        "gate streamed once, logits + gating MLP FLOPs at peak dense bf16).",
        "",
        "| data | setting | items | B | index | params | ms (median) | ms (p90) | recall@k | vs reference | "
        "vs fused | exact fallbacks | floor ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.data} | {r.setting} | {r.items:,} | {r.batch} | {r.index} | {r.params} | {r.latency_ms:.3f} | "
            f"{r.latency_p90_ms:.3f} | {r.recall:.4f} | {r.speedup_vs_reference:.1f}x | "
            f"{r.speedup_vs_fused:.1f}x | {r.fallback_rows} | {r.floor_ms:.3f} |"
        )
    atomic_write(out / "bench_topk.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        ax.scatter(r.latency_ms, r.recall, s=12)
    ax.set_xscale("log")
    ax.set_xlabel("latency per batch (ms, log)")
    ax.set_ylabel("recall@k vs exact")
    ax.set_title(f"MoL top-k, {device_name}")
    atomic_write(
        out / "bench_topk.png", lambda handle: fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    )
    plt.close(fig)
