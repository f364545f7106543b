"""The approximate indexes of the top-k benchmark (:mod:`rails.retrieval.benchmark`) and their budgets.

Each entry is one row family of the recall-vs-latency curves: PerComponentTopK / AverageTopK / CombinedTopK
(spec §7) at the paper's budgets, ClusteredTopK (IVF) at several (items per list, probes, candidates), and
faiss IVF candidate stages when faiss is importable. ``tiny`` gives small budgets for CPU smoke runs.
Above :data:`CLUSTERED_FULL_GRID_MAX_ITEMS` items ClusteredTopK runs only its replayed large-corpus points
(every row builds its own k-means lists, the slow part at 100M items).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rails.retrieval.indexes import AverageTopK, ClusteredTopK, CombinedTopK, PerComponentTopK, RetrievalIndex
from rails.retrieval.mips import FaissMIPS, TorchMIPS

IndexFactory = Callable[[], RetrievalIndex]
CLUSTERED_FULL_GRID_MAX_ITEMS = 20_000_000
"""Every ClusteredTopK budget up to this corpus size; above it the replayed points (its lists hold member
positions only, so a 100M-item corpus fits once on an H200, but each row runs its own k-means)."""
HIGH_RECALL_IVF = (1000, 256, 32, 8000)
"""(items per list, shortlisted lists, probes, candidates): the replayed point of the 10M headline (.995)."""
LARGE_CORPUS_IVF = ((10_000, 256, 32, 8000), (1000, 1024, 256, 8000))
"""The replayed ClusteredTopK points above the full grid. At 100M items the 10M point (100,000 lists of 1,000,
32 probes) kept .49 of the true top-100 in its probed lists (2026-12-01): either as many lists as at 10M, ten
times larger, or 1,000-item lists with eight times the probes."""


def index_grid(
    tiny: bool, device: torch.device, with_faiss: bool, num_items: int = 1_000_000
) -> list[tuple[str, str, IndexFactory]]:
    """(name, params, factory) of every benchmarked approximate index (ClusteredTopK's lists from X)."""
    bf16 = "bfloat16" if device.type == "cuda" else None
    mips = lambda: TorchMIPS(dtype=bf16)  # noqa: E731
    grid: list[tuple[str, str, IndexFactory]] = []
    for kp in [1, 5] if tiny else [5, 10, 50, 100]:
        grid.append(("PerComponentTopK", f"k_per_pair={kp}", lambda kp=kp: PerComponentTopK(kp, mips=mips)))
    for kc in [100, 400] if tiny else [200, 500, 1000, 2000, 4000]:
        grid.append(("AverageTopK", f"num_candidates={kc}", lambda kc=kc: AverageTopK(kc, mips=mips)))
    # CUDA-graph replay of the search stage (launch overhead) at the budgets where it can decide the headline
    graphs = device.type == "cuda"
    for kc in ([400] if tiny else [4000]) if graphs else []:
        grid.append(
            (
                "AverageTopK+graphs",
                f"num_candidates={kc}",
                lambda kc=kc: AverageTopK(kc, mips=mips, cuda_graphs=True),
            )
        )
    for kp, kc in [(1, 100)] if tiny else [(5, 200), (50, 500), (100, 1000)]:
        params = f"k_per_pair={kp},num_candidates={kc}"
        grid.append(("CombinedTopK", params, lambda kp=kp, kc=kc: CombinedTopK(kp, kc, mips=mips)))
    ivf = (  # (items per list, shortlisted lists, probes, candidates)
        [(64, 8, 2, 100), (64, 16, 8, 200)]
        if tiny
        else [
            (1000, 128, 8, 1000),
            (1000, 128, 8, 2000),
            (1000, 128, 16, 2000),
            (1000, 128, 16, 4000),
            (1000, 256, 32, 4000),
            (256, 256, 32, 2000),
            (256, 512, 64, 4000),
        ]
    )
    # replayed only: past the budget where round 7 left 10M at .981 recall (more probes / more candidates)
    graphs_only = [] if tiny or not graphs else [(1000, 256, 48, 4000), HIGH_RECALL_IVF]
    if num_items > CLUSTERED_FULL_GRID_MAX_ITEMS:
        ivf, graphs_only = [], list(LARGE_CORPUS_IVF) if graphs else []
    graphed_ivf = {ivf[-1], ivf[0]} if tiny else {(1000, 128, 16, 2000), (1000, 256, 32, 4000)}
    for per_list, shortlist, probes, kc in ivf + graphs_only:
        lists = max(1, round(num_items / per_list))
        params = f"num_lists={lists},shortlist={shortlist},num_probes={probes},num_candidates={kc}"
        point = (per_list, shortlist, probes, kc)
        replays = [False, True] if graphs and point in graphed_ivf else [False]
        for replay in [True] if point in graphs_only else replays:

            def clustered(
                nl: int = lists, sl: int = shortlist, npr: int = probes, kc: int = kc, replay: bool = replay
            ) -> RetrievalIndex:
                return ClusteredTopK(nl, npr, kc, shortlist=sl, dtype=bf16, cuda_graphs=replay)

            grid.append(("ClusteredTopK+graphs" if replay else "ClusteredTopK", params, clustered))
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
