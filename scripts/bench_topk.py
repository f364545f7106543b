"""Recall-vs-latency benchmark of exact and approximate top-k for Mixture-of-Logits heads.

For synthetic MoL heads (P_Q x P_X x d_P settings of the paper) over corpora of random item embeddings,
every index (plain-PyTorch chunked brute force = the reference row, fused Triton exact search on CUDA,
PerComponentTopK / AverageTopK / CombinedTopK at several budgets, faiss candidate stages when faiss is
importable) is timed on batches of queries (median over ``--runs`` calls after ``--warmup``; CUDA events
on GPU) and its recall@k against the exact top-k is measured on the same queries. The roofline floor of
exact search (bytes streamed, FLOPs) is stated per row. Results: ``<out>/bench_topk.{md,json,csv}``.

    python scripts/bench_topk.py                       # GPU: 1M and 10M items, 8x4x64 and 8x8x32, bf16
    python scripts/bench_topk.py --items 1000000 --settings 8x4x64 --batch-sizes 32
    python scripts/bench_topk.py --tiny --out /tmp/b   # CPU smoke run (used by the tests)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rails.models.similarity.mol import MoLSimilarity
from rails.retrieval import AverageTopK, CombinedTopK, ExactTopK, FaissMIPS, PerComponentTopK, TorchMIPS
from rails.retrieval.index import RetrievalIndex
from rails.retrieval.metrics import recall_at_k
from rails.retrieval.mips import faiss_available

# Peak dense bf16 tensor FLOP/s and HBM bytes/s (public spec sheets; docs/../peers.md §3).
PEAKS = {"H100": (989.4e12, 3.35e12), "H200": (989.4e12, 4.8e12)}


@dataclass
class Row:
    device: str
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
    floor_ms: float
    floor_bytes: float
    floor_flops: float


def parse_setting(text: str) -> tuple[int, int, int]:
    try:
        pq, px, dim = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise SystemExit(f"--settings entries must look like 8x4x64 (P_Q x P_X x d_P), got {text!r}") from err
    return pq, px, dim


def make_head(pq: int, px: int, dim: int, width: int, hidden: int, device: torch.device) -> MoLSimilarity:
    torch.manual_seed(0)
    head = MoLSimilarity(
        query_dim=width,
        item_dim=width,
        num_query_components=pq,
        num_item_components=px,
        component_dim=dim,
        query_hidden_dim=4 * width,
        gating_query_hidden_dim=hidden,
        gating_item_hidden_dim=hidden,
        gating_qi_hidden_dim=hidden,
    )
    return head.to(device).eval()


@torch.no_grad()
def synthetic_item_state(head: MoLSimilarity, num_items: int, width: int, dtype: torch.dtype, device) -> dict:
    """Item state of random embeddings with a low-rank cluster structure, encoded in batches."""
    gen = torch.Generator(device="cpu").manual_seed(1)
    centers = torch.randn(256, width, generator=gen).to(device)
    parts: dict[str, list[torch.Tensor]] = {"components": [], "gate": []}
    for start in range(0, num_items, 1 << 18):
        count = min(1 << 18, num_items - start)
        assign = torch.randint(0, 256, (count,), generator=gen).to(device)
        emb = centers[assign] + 0.7 * torch.randn(count, width, generator=gen).to(device)
        state = head.encode_items(emb)
        for key in parts:
            parts[key].append(state[key].to(dtype))
    return {key: torch.cat(values) for key, values in parts.items()}


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


def roofline(pq: int, px: int, dim: int, hidden: int, items: int, batch: int, device_name: str):
    """(floor_ms, bytes, flops) of exact search: bf16 item components + item gate streamed once;
    per (query, item): pair logits 2*P*d_P, query-item gating MLP 2*2*P*H, ~8P element-wise."""
    pairs = pq * px
    nbytes = items * (px * dim + pairs) * 2.0
    flops = batch * items * (2.0 * pairs * dim + 4.0 * pairs * hidden + 8.0 * pairs)
    peak = next((v for key, v in PEAKS.items() if key in device_name), None)
    if peak is None:
        return math.nan, nbytes, flops
    return 1000.0 * max(flops / peak[0], nbytes / peak[1]), nbytes, flops


def index_grid(
    tiny: bool, device: torch.device, with_faiss: bool
) -> list[tuple[str, str, Callable[[], RetrievalIndex]]]:
    """(name, params, factory) of every benchmarked index."""
    bf16 = "bfloat16" if device.type == "cuda" else None
    mips = lambda: TorchMIPS(dtype=bf16)  # noqa: E731
    grid: list[tuple[str, str, Callable[[], RetrievalIndex]]] = []
    for kp in [1, 5] if tiny else [5, 10, 50, 100]:
        grid.append(("PerComponentTopK", f"k_per_pair={kp}", lambda kp=kp: PerComponentTopK(kp, mips=mips)))
    for kc in [100, 400] if tiny else [200, 500, 1000, 2000, 4000]:
        grid.append(("AverageTopK", f"num_candidates={kc}", lambda kc=kc: AverageTopK(kc, mips=mips)))
    for kp, kc in [(1, 100)] if tiny else [(5, 200), (50, 500), (100, 1000)]:
        grid.append(
            (
                "CombinedTopK",
                f"k_per_pair={kp},num_candidates={kc}",
                lambda kp=kp, kc=kc: CombinedTopK(kp, kc, mips=mips),
            )
        )
    if with_faiss:
        for nlist, nprobe in [(8, 2)] if tiny else [(100, 1), (1000, 10)]:
            grid.append(
                (
                    "PerComponentTopK+faiss_ivf",
                    f"k_per_pair=5,nlist={nlist},nprobe={nprobe}",
                    lambda nl=nlist, npr=nprobe: PerComponentTopK(
                        5, mips=lambda: FaissMIPS(index="ivf", nlist=nl, nprobe=npr)
                    ),
                )
            )
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--settings", nargs="+", default=["8x4x64", "8x8x32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--width", type=int, default=64, help="query/item embedding width D")
    parser.add_argument("--hidden", type=int, default=128, help="gating MLP hidden width")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reference-chunk", type=int, default=65536)
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny corpus and heads")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    if args.tiny:
        args.items, args.settings, args.batch_sizes = [3000], ["3x2x8"], [1, 8]
        args.width, args.hidden, args.warmup, args.runs, args.k = 16, 16, 1, 3, 20
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with_faiss = faiss_available() and not args.no_faiss
    rows: list[Row] = []
    for setting in args.settings:
        pq, px, dim = parse_setting(setting)
        head = make_head(pq, px, dim, args.width, args.hidden, device)
        for num_items in args.items:
            item_state = synthetic_item_state(head, num_items, args.width, dtype, device)
            reference = ExactTopK(chunk_size=args.reference_chunk, fused=False).build(
                head, item_state=item_state
            )
            exact_rows: list[tuple[str, str, RetrievalIndex]] = [("reference_torch_chunked", "", reference)]
            if device.type == "cuda":
                fused = ExactTopK(fused=True).build(head, item_state=item_state)
                exact_rows.append(("fused_triton_exact", "", fused))
            approx = [
                (n, p, f().build(head, item_state=item_state))
                for n, p, f in index_grid(args.tiny, device, with_faiss)
            ]
            for batch in args.batch_sizes:
                gen = torch.Generator().manual_seed(batch)
                queries = torch.randn(batch, args.width, generator=gen).to(device)
                query_state = head.encode_queries(queries)
                truth_index = exact_rows[-1][2]  # fused when available (checked against the reference below)
                _, truth = truth_index.search_state(query_state, args.k)
                floor_ms, nbytes, flops = roofline(pq, px, dim, args.hidden, num_items, batch, device_name)
                ref_ms = None
                for name, params, index in exact_rows + approx:
                    times = time_call(
                        lambda i=index, q=query_state: i.search_state(q, args.k),
                        args.warmup,
                        args.runs,
                        device,
                    )
                    median = statistics.median(times)
                    ref_ms = ref_ms or median
                    _, ids = index.search_state(query_state, args.k)
                    rows.append(
                        Row(
                            device_name,
                            setting,
                            num_items,
                            batch,
                            args.k,
                            name,
                            params,
                            median,
                            sorted(times)[int(0.9 * (len(times) - 1))],
                            recall_at_k(ids, truth),
                            ref_ms / median,
                            floor_ms,
                            nbytes,
                            flops,
                        )
                    )
                    print(
                        f"{setting} X={num_items} B={batch} {name} {params}: {median:.3f} ms, recall {rows[-1].recall:.4f}"
                    )
            del item_state, approx, exact_rows, reference
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write_results(rows, args.out, device_name)


def write_results(rows: list[Row], out: Path, device_name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_topk.json").write_text(
        json.dumps({"device": device_name, "rows": [asdict(r) for r in rows]}, indent=1)
    )
    with (out / "bench_topk.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    lines = [
        "# Top-k retrieval benchmark (scripts/bench_topk.py)",
        "",
        f"Device: **{device_name}**, torch {torch.__version__}. Latency = median ms per query batch (CUDA events "
        "after warm-up); recall = |top-k ∩ exact top-k| / k; speed-up vs the plain-PyTorch chunked reference row; "
        "floor = roofline of exact search (bf16 item components + gate streamed once, logits + gating MLP FLOPs "
        "at peak dense bf16).",
        "",
        "| setting | items | B | index | params | ms (median) | ms (p90) | recall@k | speed-up | floor ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.setting} | {r.items:,} | {r.batch} | {r.index} | {r.params} | {r.latency_ms:.3f} | "
            f"{r.latency_p90_ms:.3f} | {r.recall:.4f} | {r.speedup_vs_reference:.1f}x | {r.floor_ms:.3f} |"
        )
    (out / "bench_topk.md").write_text("\n".join(lines) + "\n")
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
    fig.savefig(out / "bench_topk.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
