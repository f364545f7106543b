"""Recall-vs-latency benchmark of exact and approximate top-k for Mixture-of-Logits heads.

For MoL heads (P_Q x P_X x d_P settings of the paper) over synthetic corpora, or a trained checkpoint's
head and item table, every index (plain-PyTorch chunked brute force = the reference row, fused Triton exact search on CUDA,
PerComponentTopK / AverageTopK / CombinedTopK at several budgets, faiss candidate stages when faiss is
importable) is timed on batches of queries (median over ``--runs`` calls after ``--warmup``; CUDA events
on GPU) and its recall@k against the exact top-k is measured on the same queries. The roofline floor of
exact search (bytes streamed, FLOPs) is stated per row, and every row's speed-up vs both the reference and
the fused exact search of the same run. Results: ``<out>/bench_topk.{md,json,csv}``.

Data (``--data``, several allowed):
- ``structured`` (default): item embeddings are a mixture of Gaussians on the sphere (``--clusters``);
  each query mixes two items (two interests) plus noise, and the MoL head is first trained for
  ``--train-steps`` steps on (query, both items) pairs with in-batch negatives, so that its components and
  gating carry the structure a trained model has and approximate recall means something;
- ``random`` (``--random``): the untrained head over random clustered embeddings (the old behaviour;
  approximate recall is near zero since nothing aligns the components);
- ``checkpoint`` (``--checkpoint PATH``): the MoL head and item table of a rails-train checkpoint
  (``rails_config`` + ``state_dict``, no Hydra needed); queries are random items plus noise, and the
  corpus is the table tiled to ``--items`` when larger.

    python scripts/bench_topk.py                       # GPU: 1M and 10M items, 8x4x64 and 8x8x32, bf16
    python scripts/bench_topk.py --items 1000000 --settings 8x4x64 --batch-sizes 32
    python scripts/bench_topk.py --tiny --out /tmp/b   # CPU smoke run (used by the tests)
    python scripts/bench_topk.py --items 1000000 --batch-sizes 32 --data structured random --runs 10 --no-faiss
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rails.kernels.mol_topk import fused_mol_topk
from rails.models.similarity.mol import MoLSimilarity
from rails.retrieval import AverageTopK, CombinedTopK, ExactTopK, FaissMIPS, PerComponentTopK, TorchMIPS
from rails.retrieval.index import RetrievalIndex
from rails.retrieval.metrics import recall_at_k
from rails.retrieval.mips import faiss_available
from rails.utils.checkpoint_io import load_checkpoint_file

# Peak dense bf16 tensor FLOP/s and HBM bytes/s (public spec sheets; docs/../peers.md §3).
PEAKS = {"H100": (989.4e12, 3.35e12), "H200": (989.4e12, 4.8e12)}


@dataclass
class Row:
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


@dataclass
class Problem:
    """A head, its (X, ...) item state and a query sampler: ``queries(n, seed) -> (n, D_q)``."""

    name: str
    head: MoLSimilarity
    item_state: dict[str, torch.Tensor]
    queries: Callable[[int, int], torch.Tensor]


def sphere(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def clustered_items(
    num_items: int, width: int, clusters: int, spread: float, seed: int, device
) -> torch.Tensor:
    """(X, D) unit item embeddings: a mixture of ``clusters`` Gaussians on the sphere."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centers = sphere(torch.randn(clusters, width, generator=gen)).to(device)
    parts = []
    for start in range(0, num_items, 1 << 20):
        count = min(1 << 20, num_items - start)
        assign = torch.randint(0, clusters, (count,), generator=gen).to(device)
        noise = torch.randn(count, width, generator=gen).to(device) * (spread / math.sqrt(width))
        parts.append(sphere(centers[assign] + noise))
    return torch.cat(parts)


def two_interest_queries(items: torch.Tensor, count: int, noise: float, gen: torch.Generator):
    """(n, D) queries mixing two random items plus noise, and their (n, 2) positive item positions."""
    positives = torch.randint(0, items.shape[0], (count, 2), generator=gen).to(items.device)
    jitter = torch.randn(count, items.shape[1], generator=gen).to(items.device) * (
        noise / math.sqrt(items.shape[1])
    )
    return sphere(items[positives].sum(dim=1) + jitter), positives


def train_head(
    head: MoLSimilarity, items: torch.Tensor, steps: int, batch: int, noise: float, seed: int
) -> float:
    """Train the head on two-interest queries (both items positive) with in-batch negatives; final loss."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    head.train()
    loss = torch.zeros(())
    for _ in range(steps):
        queries, positives = two_interest_queries(items, batch, noise, gen)
        candidates = items[positives.T.reshape(-1)]  # (2n, D): first items then second items
        scores = head(queries, candidates).scores.float()  # (n, 2n)
        log_probs = scores.log_softmax(dim=1)
        rows = torch.arange(batch, device=items.device)
        loss = -(log_probs[rows, rows] + log_probs[rows, rows + batch]).mean() / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    head.eval()
    return float(loss.detach())


@torch.no_grad()
def encode_items(head: MoLSimilarity, items: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """(X, D_x) embeddings -> item state (components in ``dtype``), encoded 2^18 items at a time."""
    parts: dict[str, list[torch.Tensor]] = {"components": [], "gate": []}
    for start in range(0, items.shape[0], 1 << 18):
        state = head.encode_items(items[start : start + (1 << 18)])
        for key in parts:
            parts[key].append(state[key].to(dtype))
    return {key: torch.cat(values) for key, values in parts.items()}


def synthetic_problem(kind: str, setting: str, num_items: int, args, dtype: torch.dtype, device) -> Problem:
    """``structured``: trained head over clustered items; ``random``: untrained head, random-ish corpus."""
    pq, px, dim = parse_setting(setting)
    head = make_head(pq, px, dim, args.width, args.hidden, device)
    if kind == "random":
        gen = torch.Generator(device="cpu").manual_seed(1)
        centers = torch.randn(256, args.width, generator=gen)
        assign = torch.randint(0, 256, (num_items,), generator=gen)
        items = (centers[assign] + 0.7 * torch.randn(num_items, args.width, generator=gen)).to(device)

        def random_queries(count: int, seed: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed(seed)
            return torch.randn(count, args.width, generator=gen).to(device)

        return Problem(kind, head, encode_items(head, items, dtype), random_queries)
    items = clustered_items(num_items, args.width, args.clusters, args.spread, 1, device)
    t0 = time.perf_counter()
    loss = train_head(head, items, args.train_steps, args.train_batch, args.query_noise, seed=2)
    print(
        f"{setting} X={num_items}: trained the head for {args.train_steps} steps in "
        f"{time.perf_counter() - t0:.1f} s, final loss {loss:.3f}"
    )

    def structured_queries(count: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(10_000 + seed)
        return two_interest_queries(items, count, args.query_noise, gen)[0]

    return Problem(kind, head, encode_items(head, items, dtype), structured_queries)


def instantiate_plain(node: Any) -> Any:
    """Build a resolved ``_target_`` config node (dicts/lists of plain values) without Hydra."""
    if isinstance(node, list):
        return [instantiate_plain(v) for v in node]
    if not isinstance(node, dict):
        return node
    kwargs = {k: instantiate_plain(v) for k, v in node.items() if not k.startswith("_")}
    if "_target_" not in node:
        return kwargs
    module_name, _, attr = node["_target_"].rpartition(".")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


def checkpoint_problem(path: Path, num_items: int, noise: float, dtype: torch.dtype, device) -> Problem:
    """MoL head + item table of a rails-train checkpoint; queries = random items plus noise."""
    checkpoint = load_checkpoint_file(path)
    if "rails_config" not in checkpoint or "state_dict" not in checkpoint:
        raise SystemExit(
            f"--checkpoint {path}: not a rails-train checkpoint (needs rails_config and state_dict)"
        )
    node = checkpoint["rails_config"].get("model", {}).get("similarity")
    if not isinstance(node, dict) or not str(node.get("_target_", "")).endswith("MoLSimilarity"):
        raise SystemExit(f"--checkpoint {path}: model.similarity is not a MoLSimilarity node: {node!r}")
    head = instantiate_plain(node)
    state = checkpoint["state_dict"]
    head.load_state_dict(
        {k[len("similarity.") :]: v for k, v in state.items() if k.startswith("similarity.")}
    )
    head = head.to(device).eval()
    table = state.get("items.table.weight")
    if table is None:
        raise SystemExit(f"--checkpoint {path}: state_dict has no 'items.table.weight' item table")
    table = table[1:].float().to(device)  # row 0 = padding
    reps = math.ceil(num_items / table.shape[0])
    items = table.repeat(reps, 1)[:num_items] if reps > 1 else table
    scale = float(items.norm(dim=1).mean())

    def checkpoint_queries(count: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        picks = torch.randint(0, table.shape[0], (count,), generator=gen).to(device)
        jitter = torch.randn(count, table.shape[1], generator=gen).to(device)
        return table[picks] + jitter * (noise * scale / math.sqrt(table.shape[1]))

    return Problem("checkpoint", head, encode_items(head, items, dtype), checkpoint_queries)


@dataclass(frozen=True)
class FusedTopKConfig:
    """Tile settings of the fused exact kernel for tuning rows: items per tile and corpus splits per query."""

    block_x: int | None = None
    num_splits: int | None = None


class FusedVariant(ExactTopK):
    """Exact search with the fused kernel at explicit tile sizes (tuning rows)."""

    def __init__(self, config: FusedTopKConfig) -> None:
        super().__init__(fused=True)
        self.config = config

    def _search(self, query_state, k, exclude_positions):
        return fused_mol_topk(
            self._require_built(),
            query_state,
            self.item_state,
            k,
            exclude_positions,
            block_x=self.config.block_x,
            num_splits=self.config.num_splits,
        )


def parse_fused_config(text: str) -> FusedTopKConfig:
    """``X`` or ``XxS`` (items per tile [x corpus splits per query]) -> FusedTopKConfig."""
    try:
        values = [int(v) for v in text.lower().split("x")]
        if not 1 <= len(values) <= 2:
            raise ValueError(text)
        return FusedTopKConfig(block_x=values[0], num_splits=values[1] if len(values) > 1 else None)
    except ValueError as err:
        raise SystemExit(f"--fused-configs entries look like 128 or 128x264, got {text!r}") from err


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
    args = parser.parse_args()
    data = ["random"] if args.random else list(dict.fromkeys(args.data))
    if args.checkpoint is not None and "checkpoint" not in data:
        data.append("checkpoint")
    if "checkpoint" in data and args.checkpoint is None:
        raise SystemExit("--data checkpoint needs --checkpoint PATH")
    if args.tiny:
        args.items, args.settings, args.batch_sizes = [3000], ["3x2x8"], [1, 8]
        args.width, args.hidden, args.warmup, args.runs, args.k = 16, 16, 1, 3, 20
        args.clusters, args.train_steps, args.train_batch = 32, 10, 64
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with_faiss = faiss_available() and not args.no_faiss
    fused_configs = [parse_fused_config(text) for text in args.fused_configs]
    rows: list[Row] = []
    for kind in data:
        for setting in ["checkpoint"] if kind == "checkpoint" else args.settings:
            for num_items in args.items:
                if kind == "checkpoint":
                    problem = checkpoint_problem(args.checkpoint, num_items, args.query_noise, dtype, device)
                else:
                    problem = synthetic_problem(kind, setting, num_items, args, dtype, device)
                rows += bench_problem(
                    problem, setting, num_items, args, device, device_name, with_faiss, fused_configs
                )
                del problem
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    write_results(rows, args.out, device_name)


def bench_problem(
    problem: Problem,
    setting: str,
    num_items: int,
    args,
    device: torch.device,
    device_name: str,
    with_faiss: bool,
    fused_configs: list[FusedTopKConfig],
) -> list[Row]:
    """Time every index on one problem for every batch size; recall vs the exact (fused when on CUDA) top-k."""
    head, item_state = problem.head, problem.item_state
    pq, px = head.num_query_components, head.num_item_components
    dim, hidden = head.component_dim, head.gating.qi_part[1].out_features
    label = setting if setting != "checkpoint" else f"checkpoint {pq}x{px}x{dim}"
    reference = ExactTopK(chunk_size=args.reference_chunk, fused=False).build(head, item_state=item_state)
    exact_rows: list[tuple[str, str, RetrievalIndex]] = [("reference_torch_chunked", "", reference)]
    if device.type == "cuda":
        exact_rows.append(
            ("fused_triton_exact", "", ExactTopK(fused=True).build(head, item_state=item_state))
        )
        for config in fused_configs:
            params = f"block_x={config.block_x},num_splits={config.num_splits}"
            exact_rows.append(
                ("fused_triton_exact", params, FusedVariant(config).build(head, item_state=item_state))
            )
    approx = [
        (n, p, f().build(head, item_state=item_state))
        for n, p, f in index_grid(args.tiny, device, with_faiss)
    ]
    rows: list[Row] = []
    for batch in args.batch_sizes:
        query_state = head.encode_queries(problem.queries(batch, batch))
        _, truth = exact_rows[min(1, len(exact_rows) - 1)][2].search_state(query_state, args.k)
        floor_ms, nbytes, flops = roofline(pq, px, dim, hidden, num_items, batch, device_name)
        ref_ms = fused_ms = None
        for name, params, index in exact_rows + approx:
            times = time_call(
                lambda i=index, q=query_state: i.search_state(q, args.k), args.warmup, args.runs, device
            )
            median = statistics.median(times)
            ref_ms = ref_ms or median
            if name == "fused_triton_exact" and not params:
                fused_ms = median
            _, ids = index.search_state(query_state, args.k)
            row = Row(
                device_name,
                problem.name,
                label,
                num_items,
                batch,
                args.k,
                name,
                params,
                median,
                sorted(times)[int(0.9 * (len(times) - 1))],
                recall_at_k(ids, truth),
                ref_ms / median,
                (fused_ms / median) if fused_ms else math.nan,
                int(getattr(index, "fallback_rows", 0)),
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
        "after warm-up); recall = |top-k ∩ exact top-k| / k; speed-ups vs the plain-PyTorch chunked reference row and vs the fused exact "
        "search of the same run; "
        "floor = roofline of exact search (bf16 item components + gate streamed once, logits + gating MLP FLOPs "
        "at peak dense bf16).",
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
