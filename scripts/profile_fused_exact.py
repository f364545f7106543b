"""Where the fused exact MoL top-k kernel spends its time: stage ablations timed side by side (CUDA).

A diagnostic beside ``scripts/bench_topk.py``. Without hardware counters, the kernel's stages are located by
timing variants that leave one stage out (``fused_mol_topk(ablate=...)``, wrong results, timing only) and
taking differences, all with the block sizes the autotuner picked for the search without prune (the headline,
as the exact index runs it):

- ``full`` (pruning on; the search default since 2026-12-01 is off) and ``full, no prune`` (every tile gated: the ablations' baseline);
- ``full, no prune, N tiles per sort``: the running top-k parking merged tiles and sorting them in N (at most
  ``K_PAD // BX``) at a time (``fused_mol_topk(merge_tiles=N)``) instead of one sort per merged tile;
- ``no gating MLP`` (ablate 1), ``no top-k merge`` (ablate 2), ``no pair permute`` (ablate 3), pruning off;
- ``two-pass`` with and without pruning (``rails.kernels.mol_topk_two_pass``, ``--sample-stride``): a search
  of every S-th item sets per-query thresholds, then the kernel emits only the keys above them (no merge).

It also reports the compiled kernel's registers and spills per thread and the roofline floor of the search.
``--blocks`` / ``--splits`` add a grid of untuned launches of the two-pass search without pruning (the search
default above 10M items; ``--grid-search one-pass``: the running top-k without pruning, with each of
``--merge-tiles``): queries per program x items per tile (x warps) x corpus splits (x gating hidden units
per step, ``--hidden-chunks``; 0 = all at once; x registers per thread, ``--maxnreg``; 0 = ptxas' choice; x tiles
scored per loop step as independent chains, ``--step-tiles``), each
with its agreement with the tuned search's top-k (a wrong launch shows there, not only in its time). Writes
``--out``/profile_fused_exact.{json,md}.

    python scripts/profile_fused_exact.py --items 1000000 --setting 8x4x64 --batch 32
    python scripts/profile_fused_exact.py --items 10000000 --blocks 4x32 8x16 16x8 32x4 32x8 --splits 132 528
    python scripts/profile_fused_exact.py --blocks 8x8x4 4x32x8 --grid-search one-pass --merge-tiles 1 4 16
    python scripts/profile_fused_exact.py --blocks 4x32x8 --grid-search one-pass --merge-tiles 16 --maxnreg 0 128 168
    python scripts/profile_fused_exact.py --blocks 4x16x8 4x32x8 --grid-search one-pass --merge-tiles 16 --step-tiles 1 2
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from rails.io import atomic_write
from rails.kernels.mol_topk_blocks import parse_launch
from rails.retrieval.benchmark import measure_peaks, roofline, time_call
from rails.retrieval.benchmark_data import SyntheticSettings, synthetic_problem
from rails.retrieval.metrics import recall_at_k

VARIANTS = (  # (name, prune, ablate, two passes, merged tiles per sort)
    ("full", True, 0, False, 1),
    ("full, no prune", False, 0, False, 1),
    ("full, no prune, 4 tiles per sort", False, 0, False, 4),
    ("full, no prune, 16 tiles per sort", False, 0, False, 16),
    ("no gating MLP", False, 1, False, 1),
    ("no top-k merge", False, 2, False, 1),
    ("no pair permute", False, 3, False, 1),
    ("two-pass", True, 0, True, 1),
    ("two-pass, no prune", False, 0, True, 1),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--setting", default="8x4x64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--sample-stride", type=int, default=64, help="first-pass stride of the two-pass rows"
    )
    parser.add_argument("--train-steps", type=int, default=300, help="synthetic head training steps")
    parser.add_argument("--out", type=Path, default=Path("results/profiles"))
    parser.add_argument(
        "--blocks", nargs="*", default=[], type=parse_block, help="BQxBX or BQxBXxWARPS, e.g. 32x4x8"
    )
    parser.add_argument(
        "--splits",
        nargs="*",
        type=int,
        default=[],
        help="corpus splits of the --blocks grid (default: the kernel's)",
    )
    parser.add_argument(
        "--hidden-chunks",
        nargs="*",
        type=int,
        default=[],
        help="gating hidden units per step in the grid (0: all)",
    )
    parser.add_argument(
        "--grid-search",
        choices=("two-pass", "one-pass"),
        default="two-pass",
        help="the search of the --blocks grid (both without pruning)",
    )
    parser.add_argument(
        "--maxnreg",
        nargs="+",
        type=int,
        default=[0],
        help="registers per thread of the grid's launches (fused_mol_topk(maxnreg=...); 0: ptxas' choice)",
    )
    parser.add_argument(
        "--step-tiles",
        nargs="+",
        type=int,
        default=[1],
        help="tiles scored per loop step in the grid (fused_mol_topk(step_tiles=...); 2: two independent chains)",
    )
    parser.add_argument(
        "--merge-tiles",
        nargs="+",
        type=int,
        default=[1],
        help="merged tiles per sort of a one-pass grid (fused_mol_topk(merge_tiles=...); 1: every tile)",
    )
    args = parser.parse_args()
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # CPU smoke run of this script (tests)
    if not torch.cuda.is_available() and not interpreted:
        raise SystemExit("profile_fused_exact.py times CUDA kernels: run it on a GPU machine")
    from rails.kernels import mol_topk_triton as kernel
    from rails.kernels.mol_topk_two_pass import two_pass_mol_topk

    device = torch.device("cpu" if interpreted else "cuda")
    synthetic = SyntheticSettings(train_steps=args.train_steps)
    dtype = torch.float32 if interpreted else torch.bfloat16
    problem = synthetic_problem("structured", args.setting, args.items, synthetic, dtype, device, args.batch)
    head, items, query = problem.head, problem.item_state, problem.encode(args.batch)
    mixing = head.mixing()

    def search(two_pass: bool = False, merge_tiles: int | None = None, **kw: Any) -> Any:
        if two_pass:  # candidates emitted above sampled thresholds: no running top-k to merge into
            kw["sample_stride"] = args.sample_stride
        elif merge_tiles is not None:
            kw["merge_tiles"] = merge_tiles
        return (two_pass_mol_topk if two_pass else kernel.fused_mol_topk)(
            query.components, query.gate, items.components, items.gate,
            qi_hidden_weight=mixing.qi_hidden_weight, qi_hidden_bias=mixing.qi_hidden_bias,
            qi_out_weight=mixing.qi_out_weight, qi_out_bias=mixing.qi_out_bias,
            temperature=mixing.temperature, k=args.k, **kw,
        )  # fmt: skip

    # the headline: the autotuned one-pass search as the exact index runs it (ExactTopK: no prune)
    tuned_ms = statistics.median(time_call(lambda: search(prune=False), 2, args.runs, device, 5.0)[0])
    best = kernel.tuned_config()
    blocks = {}  # the tuned launch, untuned: its block sizes, warps and register cap
    if best is not None:
        blocks = {"block_q": best.kwargs["BQ"], "block_x": best.kwargs["BX"], "num_warps": best.num_warps,
                  "maxnreg": getattr(best, "maxnreg", None)}  # fmt: skip
    rows = []
    for name, prune, ablate, two_pass, merge_tiles in VARIANTS:
        times, _ = time_call(
            lambda p=prune, a=ablate, t=two_pass, m=merge_tiles: search(
                t, m, prune=p, ablate=a, tune=False, **blocks
            ),
            2,
            args.runs,
            device,
            5.0,
        )  # noqa: E501
        rows.append({"variant": name, "prune": prune, "ablate": ablate, "two_pass": two_pass, "merge_tiles": merge_tiles,
                     "ms": statistics.median(times),
                     **{key: kernel.LAST_COMPILED.get(key) for key in ("n_regs", "n_spills", "block")}})  # fmt: skip
        print(
            f"{name}: {rows[-1]['ms']:.3f} ms, {rows[-1]['n_regs']} registers, {rows[-1]['n_spills']} spills"
        )
    block_rows: list[dict[str, Any]] = []
    peaks = measure_peaks(device)
    floor_ms = roofline(
        head.num_query_components, head.num_item_components, head.component_dim, mixing.qi_hidden_weight.shape[0],
        args.items, args.batch, peaks,
    )[0]  # fmt: skip
    record = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)",
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "items": args.items, "setting": args.setting, "batch": args.batch, "k": args.k,
        "tuned_ms": tuned_ms, "tuned_config": str(best), "floor_ms": floor_ms, "rows": rows,
        "sample_stride": args.sample_stride, "block_rows": block_rows,
    }  # fmt: skip

    def write() -> None:  # after the variants and after each grid launch: a timeout keeps what was measured
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "profile_fused_exact.json", json.dumps(record, indent=1))
        base = next(row["ms"] for row in rows if row["variant"] == "full, no prune")
        lines = [
            f"# Fused exact MoL top-k, stage ablations: {args.items:,} items, {args.setting}, B = {args.batch}, "
            f"k = {args.k}",
            "",
            f"Written by `scripts/profile_fused_exact.py` ({record['gpu']}, torch {record['torch']}, {record['date']}). "
            f"Autotuned one-pass search without prune (as the exact index runs it) {tuned_ms:.3f} ms "
            f"({tuned_ms / floor_ms:.1f}x the floor {floor_ms:.3f} ms), "
            f"config {record['tuned_config']}; the variants below run its block sizes untuned (two-pass rows: "
            f"thresholds from every {args.sample_stride}th item, the time of both passes).",
            "",
            "| variant | ms | stage cost (no-prune baseline - variant) | registers | spills | (BQ, BX, warps, stages) |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            cost = f"{base - row['ms']:.3f}" if row["ablate"] else ""
            lines.append(
                f"| {row['variant']} | {row['ms']:.3f} | {cost} | {row['n_regs']} | {row['n_spills']} | {row['block']} |"
            )
        if block_rows:
            lines += [
                "",
                f"Block grid: untuned launches of the {args.grid_search} search without pruning (agreement: share of "
                "the tuned search's top-k positions found).",
                "",
                "| BQ | BX | warps | splits | hidden per step | tiles per sort | max registers | tiles per step | ms "
                "| x floor | agreement | registers | spills |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in block_rows:
                lines.append(
                    f"| {row['block_q']} | {row['block_x']} | {row['block'][2] if row['block'] else ''} | "
                    f"{row['num_splits'] or 'default'} | {row['hidden_chunk'] or 'all'} | {row.get('merge') or '–'} | "
                    f"{row.get('maxnreg') or 'ptxas'} | {row.get('step_tiles') or 1} | "
                    f"{row['ms']:.3f} | {row['ms'] / floor_ms:.1f} | "
                    f"{row['agreement']:.4f} | {row['n_regs']} | {row['n_spills']} |"
                )
        atomic_write(args.out / "profile_fused_exact.md", "\n".join(lines) + "\n")

    write()
    reference = search(prune=False)[1]
    two_pass = args.grid_search == "two-pass"
    merges = [None] if two_pass else args.merge_tiles  # the two-pass search emits candidates: no merge
    grid = itertools.product(
        args.blocks, args.splits or [None], args.hidden_chunks or [0], merges, args.maxnreg, args.step_tiles
    )
    for (bq, bx, warps), splits, chunk, merge, registers, step_tiles in grid:
        launch = {
            "block_q": bq,
            "block_x": bx,
            "num_warps": warps,
            "num_splits": splits,
            "hidden_chunk": chunk or None,
            "maxnreg": registers or None,
            "step_tiles": step_tiles,
        }
        times, found = time_call(
            lambda kw=launch, m=merge: search(two_pass, m, prune=False, tune=False, **kw),
            2,
            args.runs,
            device,
            5.0,
        )
        block_rows.append({**launch, "merge": merge, "ms": statistics.median(times), "agreement": recall_at_k(found[1], reference),
                           **{key: kernel.LAST_COMPILED.get(key) for key in ("n_regs", "n_spills", "block")}})  # fmt: skip
        print(f"blocks {launch}: {block_rows[-1]['ms']:.3f} ms, agreement {block_rows[-1]['agreement']:.4f}")
        write()
    write()
    print(f"wrote {args.out}/profile_fused_exact.{{json,md}}")


def parse_block(text: str) -> tuple[int, int, int | None]:
    """``BQxBX`` or ``BQxBXxWARPS`` -> (BQ, BX, warps or None); hidden steps go to ``--hidden-chunks``."""
    try:
        bq, bx, warps, chunk = parse_launch(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--blocks {err}") from err
    if chunk is not None:
        raise argparse.ArgumentTypeError(f"--blocks {text!r}: give hidden steps with --hidden-chunks")
    return bq, bx, warps


if __name__ == "__main__":
    main()
