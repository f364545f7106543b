"""Could exact MoL top-k skip most of the corpus? Prune rates of tile-level upper bounds (issue #13 item 1).

The fused exact kernel scores every (query, item) pair through the gating MLP; its floor counts tensor FLOPs, but
the per-pair SiLU / softmax work is MUFU-bound, so ``<= 3x floor`` needs most pairs never to reach the MLP. The
score is a convex combination of the pair logits, so ``max_p L_p`` bounds it; a tile of items can be skipped for a
query when the bound of every item in it is below the query's k-th best score. This study measures, on the
benchmark's structured corpus (a MoL head trained on clustered items, :mod:`rails.retrieval.benchmark_data`),
the share of (query, tile) work that such bounds would remove:

- ``item``: items whose own bound reaches the threshold (the floor of any tile scheme in this bound);
- ``tile_corpus_order``: 64-item tiles, corpus order, with the items loaded (the kernel's PRUNE today);
- ``tile_cluster_order``: the same after ordering the corpus by a k-means clustering of the item components;
- ``tile_metadata``: cluster order, bound from per-tile metadata only (each component's centroid and radius:
  ``max_ij (<f_i, c_j> + r_j) / tau``), so a skipped tile is never loaded.

Each for two thresholds: the exact k-th best score, and the k-th best of every 64th item (what the two-pass search
has before its second pass). Writes ``--out`` (JSON) and prints a table. The benchmark trains its head for 300
steps of 1,024 queries (minutes on a GPU, ~20 min on 2 CPU cores); a CPU run can train less (the flags).

    python scripts/study_tile_bounds.py --items 65536 --out results/studies/tile_bounds.json
    python scripts/study_tile_bounds.py --items 65536 --train-steps 100 --train-batch 256 --out ...   # CPU
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import torch
from torch import Tensor

from rails.io import atomic_write
from rails.retrieval.benchmark_data import SyntheticSettings, synthetic_problem
from rails.retrieval.indexes.inverted_lists import kmeans


def kth_best(scores: Tensor, k: int) -> Tensor:
    """(B, X) -> (B,) the k-th largest score per row."""
    return scores.topk(k, dim=1).values[:, -1]


def tile_survival(bounds: Tensor, threshold: Tensor, tile: int, block: int) -> float:
    """Share of (query block, tile) pairs in which some (query, item) bound reaches its query's threshold."""
    b, x = bounds.shape
    usable = (x // tile) * tile
    hit = (bounds[:, :usable] >= threshold[:, None]).view(b // block, block, usable // tile, tile)
    return float(hit.any(dim=3).any(dim=1).float().mean())


def metadata_bounds(
    query_components: Tensor, item_components: Tensor, tile: int, temperature: float
) -> Tensor:
    """(B, P_Q, d), (X, P_X, d) unit components -> (B, X // tile) tile bounds from centroids and radii."""
    x, p_x, d = item_components.shape
    usable = (x // tile) * tile
    tiles = item_components[:usable].view(usable // tile, tile, p_x, d)
    centroid = tiles.mean(dim=1)  # (T, P_X, d)
    radius = (tiles - centroid[:, None]).norm(dim=-1).amax(dim=1)  # (T, P_X)
    dots = torch.einsum("bid,tjd->btij", query_components, centroid)  # (B, T, P_Q, P_X)
    return ((dots + radius[None, :, None, :]).amax(dim=(2, 3))) / temperature


def study(
    items: int,
    setting: str,
    batch: int,
    k: int,
    tile: int,
    block: int,
    clusters: int,
    data: SyntheticSettings,
) -> dict:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    problem = synthetic_problem(
        "structured", setting, items, data, torch.float32, torch.device("cpu"), num_queries=batch
    )
    head, state = problem.head, problem.item_state
    query = problem.encode(batch)
    print(f"{time.perf_counter() - t0:.0f} s: problem built", flush=True)
    with torch.no_grad():
        scores = torch.cat(
            [head.score(query, state.index(slice(s, s + 8192))) for s in range(0, items, 8192)], 1
        )
        temperature = float(head.temperature)
        logits_max = torch.einsum("bid,xjd->bxij", query.components, state.components).amax(dim=(2, 3))
        bounds = logits_max / temperature  # (B, X): max_p L_p per (query, item)
        assert bool((bounds >= scores - 1e-3).all()), "the bound must hold"
        thresholds = {"exact": kth_best(scores, k), "sampled_1_in_64": kth_best(scores[:, ::64], k)}
        print(f"{time.perf_counter() - t0:.0f} s: exact scores and bounds", flush=True)
        flat = state.components.flatten(1)
        _, labels = kmeans(torch.nn.functional.normalize(flat, dim=1), clusters, iterations=8, seed=1)
        order = torch.argsort(labels, stable=True)  # the corpus grouped by cluster
        print(f"{time.perf_counter() - t0:.0f} s: cluster order", flush=True)
        rows = []
        for name, thr in thresholds.items():
            meta = metadata_bounds(query.components, state.components[order], tile, temperature)
            usable = meta.shape[1]
            meta_hit = (meta >= thr[:, None]).view(batch // block, block, usable).any(dim=1)
            rows.append(
                {
                    "threshold": name,
                    "item": float((bounds >= thr[:, None]).float().mean()),
                    "tile_corpus_order": tile_survival(bounds, thr, tile, block),
                    "tile_cluster_order": tile_survival(bounds[:, order], thr, tile, block),
                    "tile_metadata": float(meta_hit.float().mean()),
                }
            )
    return {
        "items": items,
        "setting": setting,
        "batch": batch,
        "k": k,
        "tile": tile,
        "query_block": block,
        "clusters": clusters,
        "train_steps": data.train_steps,
        "train_batch": data.train_batch,
        "temperature": temperature,
        "mean_score_kth": float(thresholds["exact"].mean()),
        "mean_best_logit": float(bounds.amax(dim=1).mean()),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=65536)
    parser.add_argument("--setting", default="8x4x64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--tile", type=int, default=64, help="items per tile (the kernel's BX)")
    parser.add_argument("--query-block", type=int, default=2, help="queries per program (the kernel's BQ)")
    parser.add_argument("--clusters", type=int, default=1024, help="k-means clusters of the cluster order")
    parser.add_argument(
        "--train-steps", type=int, default=300, help="head training steps (the benchmark's 300)"
    )
    parser.add_argument(
        "--train-batch", type=int, default=1024, help="queries per step (the benchmark's 1024)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = SyntheticSettings(train_steps=args.train_steps, train_batch=args.train_batch)
    result = study(
        args.items, args.setting, args.batch, args.k, args.tile, args.query_block, args.clusters, data
    )
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result.update(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit or None,
        device="cpu",
        command="python scripts/study_tile_bounds.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    )
    atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    print(
        f"share of work that reaches the MLP ({args.items} items, {args.setting}, B = {args.batch}, k = {args.k})"
    )
    print(f"{'threshold':16} {'item':>8} {'tiles':>8} {'clustered':>10} {'metadata':>9}")
    for row in result["rows"]:
        print(
            f"{row['threshold']:16} {row['item']:8.4f} {row['tile_corpus_order']:8.4f} "
            f"{row['tile_cluster_order']:10.4f} {row['tile_metadata']:9.4f}"
        )


if __name__ == "__main__":
    main()
