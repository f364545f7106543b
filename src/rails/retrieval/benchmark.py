"""Recall-vs-latency benchmark of exact and approximate top-k for Mixture-of-Logits heads (``scripts/bench_topk.py``).

On a :class:`~rails.retrieval.benchmark_data.Problem` (a MoL head, its corpus state, a query pool):

- the **baseline row** is the plain-PyTorch bf16 brute force
  (:func:`~rails.retrieval.benchmark_exact.plain_bruteforce_topk`); every row's ``speedup_vs_plain`` is its
  latency against that row's, measured side by side in the same run;
- the **ground truth** is an fp32 exact search (:func:`~rails.retrieval.benchmark_exact.exact_topk`, not
  any kernel under test) on the pool's first ``truth_queries`` queries, itself checked against float64 on
  ``check_queries`` of them; every row's recall@k is measured against it on the first min(B, truth_queries)
  queries of its batch;
- the rows: the rails exact index (``reference_torch_chunked``), the fused Triton exact search on CUDA (its
  default: one pass up to 10M items, two passes above; the other of the two beside it, and explicit tile
  settings), PerComponentTopK / AverageTopK / CombinedTopK / ClusteredTopK (IVF)
  at several budgets, and faiss candidate stages when faiss is importable; each index is built, timed and freed in turn (median over
  up to ``runs`` calls after ``warmup``, within ``time_budget_s`` per row; CUDA events on GPU);
- ``floor_ms``: the roofline of exact search (FLOPs at a matmul rate vs bytes at a bandwidth, both measured
  on the device by :func:`measure_peaks` unless given).

Brute-force rows above ``slow_max_items`` items are timed on the corpus's first ``slow_max_items`` items
and their latency scaled by X / slow_max_items (they are linear in X); such rows say so in ``note`` and
have no recall. An index that runs out of GPU memory gives a row with ``latency_ms`` None and the reason.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rails.retrieval.benchmark_data import Problem
from rails.retrieval.benchmark_exact import exact_topk, float64_check, plain_bruteforce_topk
from rails.retrieval.benchmark_grid import index_grid
from rails.retrieval.indexes import ClusteredTopK, ExactTopK, RetrievalIndex
from rails.retrieval.metrics import recall_at_k

PLAIN = "plain_torch_bruteforce"


@dataclass
class Row:
    """One benchmark row: an index (or the plain brute force) at one corpus size, head shape and batch size."""

    gpu: str
    data: str
    setting: str
    items: int
    batch: int
    k: int
    index: str
    params: str
    latency_ms: float | None
    latency_p90_ms: float | None
    timed_runs: int
    recall: float | None  # vs the fp32 ground truth, on recall_queries queries of the batch
    recall_queries: int
    speedup_vs_plain: float | None
    exact_fallback_rows: int  # queries an approximate index answered by exact search (too few candidates)
    floor_ms: float
    floor_bytes: float
    floor_flops: float
    note: str = ""


@dataclass(frozen=True)
class BenchSettings:
    """What every problem is measured with (the benchmark's flags)."""

    batch_sizes: Sequence[int] = (1, 32, 256)
    k: int = 100
    warmup: int = 3
    runs: int = 20
    time_budget_s: float = 3.0  # per row: stop timing after this many seconds (at least one timed run)
    chunk_size: int = 65536  # items per chunk of the brute force, the ground truth and the reference index
    truth_queries: int = 256  # queries with an fp32 ground truth (recall is measured on them)
    check_queries: int = 4  # of which checked against float64
    slow_max_items: int | None = None  # brute-force rows above this size: timed on a prefix, scaled
    with_reference: bool = True  # time the rails chunked exact index (ExactTopK(fused=False))
    tiny: bool = False  # small approximate budgets (CPU smoke runs)


@dataclass(frozen=True)
class Peaks:
    """Matmul rate and memory bandwidth of the roofline, and where they come from ("measured"/"given")."""

    tflops: float
    gbps: float
    source: str


@dataclass(frozen=True)
class FusedTopKConfig:
    """Tile settings of the fused exact kernel for tuning rows: items per tile, corpus splits, queries per tile."""

    block_x: int | None = None
    num_splits: int | None = None
    block_q: int | None = None

    def index(self) -> ExactTopK:
        """The fused exact index at these tile settings."""
        return ExactTopK(
            fused=True,
            fused_block_x=self.block_x,
            fused_num_splits=self.num_splits,
            fused_block_q=self.block_q,
        )


def parse_fused_config(text: str) -> FusedTopKConfig:
    """``X[xS][:Q]`` (items per tile [x corpus splits] [: queries per tile]) -> FusedTopKConfig; ValueError else."""
    try:
        tiles, _, queries = text.lower().partition(":")
        values = [int(v) for v in tiles.split("x")]
        block_q = int(queries) if queries else None
        if not 1 <= len(values) <= 2:
            raise ValueError(text)
    except ValueError as err:
        raise ValueError(f"fused configs look like 128, 128x264 or 16x528:8, got {text!r}") from err
    return FusedTopKConfig(values[0], values[1] if len(values) > 1 else None, block_q)


def parse_batch_sizes_at(entries: list[str]) -> dict[int, list[int]]:
    """``["100000000:32,256"]`` -> ``{100000000: [32, 256]}``; ValueError naming the entry otherwise."""
    result: dict[int, list[int]] = {}
    for entry in entries:
        try:
            items, sizes = entry.split(":")
            result[int(items)] = [int(b) for b in sizes.split(",")]
        except ValueError as err:
            raise ValueError(f"entries look like 100000000:32 or 100000000:1,32, got {entry!r}") from err
        if min(result[int(items)]) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {entry!r}")
    return result


def release_memory(device: torch.device) -> None:
    """Collect unreachable objects (index graphs hold reference cycles: only the cyclic collector frees
    their tensors), then return cached CUDA blocks. At 100M items one problem's state is 64 GB: without
    this the next problem's build ran out of memory next to the previous one's."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], warmup: int, runs: int, device: torch.device, budget_s: float = math.inf
) -> tuple[list[float], Any]:
    """Milliseconds per call (CUDA events on GPU, perf_counter on CPU) and the last call's result.

    At least one warm-up call (when ``warmup`` > 0) and one timed call. Further warm-up calls stop once
    ``budget_s / 2`` seconds of warm-up, further timed calls after ``budget_s`` seconds of timing (separate
    clocks: a first call that autotunes a kernel does not leave the row a single timed run).
    """
    start_warmup = time.perf_counter()
    result = None
    for i in range(warmup):
        if i and time.perf_counter() - start_warmup > budget_s / 2:
            break
        result = fn()
    _sync(device)
    start_timed = time.perf_counter()
    times: list[float] = []
    while len(times) < max(1, runs):
        if times and time.perf_counter() - start_timed > budget_s:
            break
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            result = fn()
            times.append(1000.0 * (time.perf_counter() - t0))
    return times, result


def measure_peaks(device: torch.device, tflops: float | None = None, gbps: float | None = None) -> Peaks:
    """The roofline's rates: given ones, else measured here (bf16 GEMM on CUDA / fp32 on CPU; a large copy)."""
    if tflops is not None and gbps is not None:
        return Peaks(tflops, gbps, "given")
    cuda = device.type == "cuda"
    if tflops is None:
        n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        times, _ = time_call(lambda: a @ b, 3, 10, device)
        tflops = 2.0 * n**3 / (min(times) / 1000.0) / 1e12
    if gbps is None:
        src = torch.empty((1 << 30) if cuda else (1 << 25), dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        times, _ = time_call(lambda: dst.copy_(src), 3, 10, device)
        gbps = 2.0 * src.numel() / (min(times) / 1000.0) / 1e9  # read + write
    return Peaks(float(tflops), float(gbps), "measured" if cuda else "measured (CPU)")


def roofline(
    pq: int, px: int, dim: int, hidden: int, items: int, batch: int, peaks: Peaks
) -> tuple[float, float, float]:
    """(floor_ms, bytes, flops) of exact search: bf16 item components + item gate streamed once;
    per (query, item): pair logits 2*P*d_P, query-item gating MLP 2*2*P*H, ~8P element-wise."""
    pairs = pq * px
    nbytes = items * (px * dim + pairs) * 2.0
    flops = batch * items * (2.0 * pairs * dim + 4.0 * pairs * hidden + 8.0 * pairs)
    return 1000.0 * max(flops / (peaks.tflops * 1e12), nbytes / (peaks.gbps * 1e9)), nbytes, flops


@torch.no_grad()
def check_truth(
    problem: Problem, settings: BenchSettings, device: torch.device
) -> tuple[dict[str, Any], Any]:
    """fp32 ground truth of the pool's first ``truth_queries`` queries, checked against float64 on
    ``check_queries`` of them: (the problem's JSON record, (n, K) truth positions)."""
    head, items = problem.head, problem.item_state
    count = min(settings.truth_queries, len(problem.queries))
    queries = problem.encode(count)
    t0 = time.perf_counter()
    scores, positions = exact_topk(head, queries, items, settings.k, torch.float32, settings.chunk_size)
    _sync(device)
    seconds = time.perf_counter() - t0
    checked = min(settings.check_queries, count)
    check = float64_check(
        head,
        queries.index(slice(0, checked)),
        items,
        scores[:checked],
        positions[:checked],
        settings.chunk_size,
    )
    record = {
        "data": problem.name,
        "queries": problem.queries_from,
        "setting": problem.setting,
        "items": len(items),
        "item_dtype": str(items.components.dtype).replace("torch.", ""),
        "truth": {"dtype": "float32", "queries": count, "seconds": seconds},
        "float64_check": check,
    }
    print(
        f"{problem.name} {problem.setting} X={len(items)}: ground truth {seconds:.1f} s, float64 check {check}"
    )
    return record, positions


@torch.no_grad()
def bench_problem(
    problem: Problem,
    settings: BenchSettings,
    device: torch.device,
    gpu: str,
    peaks: Peaks,
    with_faiss: bool,
    fused_configs: Sequence[FusedTopKConfig] = (),
) -> tuple[list[Row], dict[str, Any]]:
    """Every row of one problem at every batch size, and the problem's ground-truth record."""
    head, item_state = problem.head, problem.item_state
    num_items = len(item_state)
    if max(settings.batch_sizes) > len(problem.queries):
        raise ValueError(f"batch sizes {list(settings.batch_sizes)} > query pool {len(problem.queries)}")
    record, truth = check_truth(problem, settings, device)
    truth_ids = truth + 1  # indexes are built with the default ids 1..X
    hidden = head.mixing().hidden_dim
    states = {b: problem.encode(b) for b in settings.batch_sizes}
    cap = settings.slow_max_items
    scaled = cap is not None and num_items > cap
    slow_items = item_state.index(slice(0, cap)) if scaled and cap is not None else item_state
    scale = num_items / len(slow_items)
    scaled_note = (
        f"timed on the first {len(slow_items):,} items, latency x{scale:g} (linear in X); recall not measured"
    )

    def plain(q: Any) -> tuple[Any, Any]:
        scores, positions = plain_bruteforce_topk(head, q, slow_items, settings.k, settings.chunk_size)
        return scores, positions + 1

    candidates: list[tuple[str, str, Callable[[], Any], bool]] = [(PLAIN, "", lambda: plain, True)]
    if settings.with_reference:
        reference = lambda: ExactTopK(chunk_size=settings.chunk_size, fused=False).build(  # noqa: E731
            head, item_state=slow_items
        )
        candidates.append(("reference_torch_chunked", "", reference, True))
    if device.type == "cuda":
        from rails.kernels.mol_topk_two_pass import default_sample_stride, two_pass_stride  # CUDA only

        stride = default_sample_stride(num_items, settings.k)  # ExactTopK's default first: the headline row
        other = 0 if stride else two_pass_stride(num_items, settings.k)  # then the other one, if it applies
        for sample_stride, prune in [(s, p) for s in dict.fromkeys([stride, other]) for p in (False, True)]:
            fused = ExactTopK(fused=True, fused_sample_stride=sample_stride, fused_prune=prune)
            params = ",".join(
                [f"sample_stride={sample_stride}"] * (sample_stride != stride) + ["prune=True"] * prune
            )
            candidates.append(
                ("fused_triton_exact", params, lambda i=fused: i.build(head, item_state=item_state), False)
            )
        for config in fused_configs:
            params = f"block_x={config.block_x},num_splits={config.num_splits},block_q={config.block_q}"
            build = lambda c=config: c.index().build(head, item_state=item_state)  # noqa: E731
            candidates.append(("fused_triton_exact", params, build, False))
    for name, params, factory in index_grid(settings.tiny, device, with_faiss, num_items):
        candidates.append((name, params, lambda f=factory: f().build(head, item_state=item_state), False))

    rows: list[Row] = []
    plain_ms: dict[int, float] = {}
    search: Callable[[Any], Any] | None = None
    for name, params, build, slow in candidates:
        note = scaled_note if slow and scaled else ""
        try:
            index = build()
        except torch.cuda.OutOfMemoryError as err:
            index, note = None, f"out of memory at build: {str(err).splitlines()[0]}"
        for batch in settings.batch_sizes:
            floor_ms, nbytes, flops = roofline(
                head.num_query_components,
                head.num_item_components,
                head.component_dim,
                hidden,
                num_items,
                batch,
                peaks,
            )
            row = Row(
                gpu,
                problem.name,
                problem.setting,
                num_items,
                batch,
                settings.k,
                name,
                params,
                None,
                None,
                0,
                None,
                0,
                None,
                0,
                floor_ms,
                nbytes,
                flops,
                note,
            )
            rows.append(row)
            if index is None:
                continue
            search = index if callable(index) else (lambda q, i=index: i.search_state(q, settings.k))
            query = states[batch]
            try:
                times, (_, ids) = time_call(
                    lambda s=search, q=query: s(q),
                    settings.warmup,
                    settings.runs,
                    device,
                    settings.time_budget_s,
                )
            except torch.cuda.OutOfMemoryError as err:
                row.note = f"out of memory at search: {str(err).splitlines()[0]}"
                torch.cuda.empty_cache()
                continue
            factor = scale if slow else 1.0
            row.latency_ms = statistics.median(times) * factor
            row.latency_p90_ms = sorted(times)[int(0.9 * (len(times) - 1))] * factor
            row.timed_runs = len(times)
            if not (slow and scaled):
                measured = min(batch, len(truth_ids))
                row.recall = recall_at_k(ids[:measured], truth_ids[:measured])
                row.recall_queries = measured
            if isinstance(index, RetrievalIndex):
                row.exact_fallback_rows = index.exact_fallback_rows
            if isinstance(index, ClusteredTopK) and row.recall is not None:  # where its recall is lost
                losses = index.recall_losses(
                    query.index(slice(0, row.recall_queries)), truth[: row.recall_queries]
                )
                row.note = (
                    f"{row.note + '; ' if row.note else ''}true top-k in the probed lists "
                    f"{losses['probed']:.4f}, in the candidates {losses['candidates']:.4f}"
                )
            if name == PLAIN:
                plain_ms[batch] = row.latency_ms
            if batch in plain_ms:
                row.speedup_vs_plain = plain_ms[batch] / row.latency_ms
            print(
                f"{problem.name} {problem.setting} X={num_items} B={batch} {name} {params}: "
                f"{row.latency_ms:.3f} ms, recall {row.recall}, {row.speedup_vs_plain}x vs plain, "
                f"{row.exact_fallback_rows} exact fallbacks {note}"
            )
        index = search = None  # free this index (and the search closure holding it) before the next build
        release_memory(device)
    return rows, record
