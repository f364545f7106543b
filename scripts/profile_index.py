"""Where an approximate MoL index spends its search time: latency, recall and the top GPU kernels per setting.

A diagnostic beside ``scripts/bench_topk.py`` (which owns the published recall-vs-latency rows): one synthetic
problem (``--items``, ``--setting``, structured data as in the benchmark), one batch size, and a list of
``ClusteredTopK`` settings (``key=value`` pairs of its constructor). For each setting it prints and writes
(``--out``/profile_index.{json,md}``): build seconds, median search ms eager and replayed from a CUDA graph,
recall@k against the fp32 exact search, where the recall is lost (``recall_losses``) and the ``--top`` GPU
kernels of one eager search (`rails.models.step_profile.profile_step_kernels`, as bench_mol_step.py).

    python scripts/profile_index.py --items 10000000 --setting 8x4x64 --batch 32 \\
        --configs num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000 \\
                  num_lists=10000,shortlist=256,num_probes=32,num_candidates=8000,list_size_factor=1.25
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from rails.io import atomic_write
from rails.models.step_profile import profile_step_kernels
from rails.retrieval.benchmark import BenchSettings, check_truth, time_call
from rails.retrieval.benchmark_data import SyntheticSettings, synthetic_problem
from rails.retrieval.indexes import ClusteredTopK
from rails.retrieval.metrics import recall_at_k

INT_KEYS = {"num_lists", "num_probes", "num_candidates", "representatives", "shortlist", "reference_items"}
FLOAT_KEYS = {"list_size_factor"}


def parse_config(text: str) -> dict[str, Any]:
    """``"num_lists=10000,num_probes=32"`` -> ClusteredTopK keyword arguments (ints / floats checked)."""
    config: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in INT_KEYS | FLOAT_KEYS:
            raise SystemExit(
                f"--configs {text!r}: {part!r} is not KEY=VALUE with KEY in {sorted(INT_KEYS | FLOAT_KEYS)}"
            )
        try:
            config[key] = float(value) if key in FLOAT_KEYS else int(value)
        except ValueError as err:
            raise SystemExit(f"--configs {text!r}: {key}={value!r} is not a number") from err
    return config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--setting", default="8x4x64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--configs", nargs="+", required=True, help="ClusteredTopK KEY=VALUE,... per setting")
    parser.add_argument("--train-steps", type=int, default=300, help="synthetic head training steps")
    parser.add_argument("--top", type=int, default=12, help="kernels listed per setting")
    parser.add_argument("--out", type=Path, default=Path("results/profiles"))
    args = parser.parse_args()
    configs = [parse_config(text) for text in args.configs]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    synthetic = SyntheticSettings(train_steps=args.train_steps)
    problem = synthetic_problem("structured", args.setting, args.items, synthetic, dtype, device, args.batch)
    settings = BenchSettings(batch_sizes=[args.batch], k=args.k, truth_queries=args.batch)
    _, truth = check_truth(problem, settings, device)
    query = problem.encode(args.batch)
    results = []
    for text, config in zip(args.configs, configs, strict=True):
        row: dict[str, Any] = {"config": text}
        for replay in (False, True):
            t0 = time.perf_counter()
            index = ClusteredTopK(**config, dtype=str(dtype).removeprefix("torch."), cuda_graphs=replay)
            index.build(problem.head, item_state=problem.item_state)
            _sync(device)
            build_s = time.perf_counter() - t0
            times, (_, ids) = time_call(lambda i=index: i.search_state(query, args.k), 3, 20, device, 3.0)
            key = "graphs" if replay else "eager"
            row[f"{key}_ms"] = statistics.median(times)
            if not replay:
                row["build_s"] = build_s
                row["recall"] = recall_at_k(ids, truth + 1)
                row.update(index.recall_losses(query, truth))
                profile = profile_step_kernels(
                    lambda i=index: i.search_state(query, args.k), device, steps=1, top=args.top
                )
                row["busy_ms"], row["kernels"] = profile["busy_ms"], profile["top"]
            del index
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(row)
        print(
            f"{text}: eager {row['eager_ms']:.3f} ms, graphs {row['graphs_ms']:.3f} ms, recall {row['recall']:.4f} "
            f"(probed {row['probed']:.4f}, candidates {row['candidates']:.4f}), build {row['build_s']:.1f} s",
            flush=True,
        )
    record = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "items": args.items,
        "setting": args.setting,
        "batch": args.batch,
        "k": args.k,
        "rows": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "profile_index.json", json.dumps(record, indent=1))
    lines = [
        f"# ClusteredTopK search profile: {args.items:,} items, {args.setting}, B = {args.batch}, k = {args.k}",
        "",
        f"Written by `scripts/profile_index.py` ({record['gpu']}, torch {record['torch']}, {record['date']}).",
        "",
    ]
    for row in results:
        lines += [
            f"## {row['config']}",
            "",
            f"eager {row['eager_ms']:.3f} ms, graphs {row['graphs_ms']:.3f} ms, recall {row['recall']:.4f} "
            f"(true top-k in the probed lists {row['probed']:.4f}, in the candidates {row['candidates']:.4f}); "
            f"device busy {row['busy_ms']:.3f} ms in one eager search",
            "",
            "| kernel | calls | ms |",
            "|---|---|---|",
            *(f"| `{k['name'][:90]}` | {k['calls']:g} | {k['ms']:.3f} |" for k in row["kernels"]),
            "",
        ]
    atomic_write(args.out / "profile_index.md", "\n".join(lines))
    print(f"wrote {args.out}/profile_index.{{json,md}}")


if __name__ == "__main__":
    main()
