"""Report of the MoL vs dot training-step benchmark: the JSON document and its markdown (``docs/bench_mol.*``).

The measuring side is :mod:`rails.models.benchmark`; this module only turns rows into the JSON and renders the
markdown from that JSON alone (``scripts/bench_mol_step.py --render``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import torch

from rails.models.benchmark import Shapes


def head_step_report(
    rows: Sequence[dict[str, Any]],
    shapes: Shapes,
    *,
    device_name: str,
    command: str,
    commit: str | None,
    warmup: int,
    iters: int,
    full_length: bool,
    tiny: bool,
    note: str = "",
) -> dict[str, Any]:
    """The JSON document of one benchmark run (``docs/bench_mol.json``); no rows + ``note``: nothing measured."""
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "device_name": device_name,
        "torch": torch.__version__,
        "commit": commit,
        "command": command,
        "shapes": dataclasses.asdict(shapes),
        "warmup": warmup,
        "iters": iters,
        "full_length": full_length,
        "tiny": tiny,
        "note": note,
        "rows": [dict(row) for row in rows],
    }


KERNELS_SHOWN = 8  # kernels per profiled row on the page


def _variant(row: dict[str, Any]) -> str:
    return row.get("variant", "eager")  # rows written before variants existed ran the eager step


def _ratio_cells(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each row's step time over the dot-product row of the same precision and variant."""
    dot = {
        (r["precision"], _variant(r)): r["mean_ms"] for r in rows if r["head"] == "dot" and "error" not in r
    }
    keys = [(r["precision"], _variant(r)) for r in rows]
    return [
        f"{r['mean_ms'] / dot[key]:.2f}" if key in dot else "-" for r, key in zip(rows, keys, strict=True)
    ]


def _speedup_cells(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each row's eager step time over its own: the speed-up of the compiled variant (eager rows: 1.00)."""
    eager = {
        (r["head"], r["precision"]): r["mean_ms"] for r in rows if _variant(r) == "eager" and "error" not in r
    }
    keys = [(r["head"], r["precision"]) for r in rows]
    return [
        f"{eager[key] / r['mean_ms']:.2f}" if key in eager else "-" for r, key in zip(rows, keys, strict=True)
    ]


def _profile_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per profiled row: device-busy time vs the timed step and its most expensive kernels."""
    profiled = [row for row in rows if "profile" in row]
    if not profiled:
        return []
    lines = [
        "",
        "Where the step's time goes (torch.profiler over a few more steps; per step; busy = summed kernel "
        "time, the rest of the timed step the device waits for launches):",
    ]
    for row in profiled:
        profile = row["profile"]
        share = profile["busy_ms"] / row["mean_ms"] if row["mean_ms"] > 0 else float("nan")
        lines += [
            "",
            f"{row['head']} / {row['precision']} / {_variant(row)}: busy {profile['busy_ms']:.2f} ms of "
            f"{row['mean_ms']:.2f} ms ({share:.0%}), {profile['launches']:.0f} kernels",
            "",
            "| kernel | calls | ms |",
            "|---|---|---|",
        ]
        # the JSON keeps more (the step's device time, kernel by kernel)
        shown = profile["top"][:KERNELS_SHOWN]
        lines += [f"| `{k['name'][:90]}` | {k['calls']:.0f} | {k['ms']:.3f} |" for k in shown]
    return lines


def head_step_markdown(report: dict[str, Any]) -> str:
    """``docs/bench_mol.md`` rendered from a :func:`head_step_report` document (nothing else is written)."""
    shapes = Shapes(**{**report["shapes"], "mol": tuple(report["shapes"]["mol"])})
    rows = report["rows"]
    lines = [
        "# MoL vs dot-product training step (HSTU-large)",
        "",
        f"Written by `scripts/bench_mol_step.py` from the JSON next to it ({report['date']}), device: "
        f"**{report['device_name']}**, torch {report['torch']}, commit `{report['commit'] or 'unknown'}`.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Shapes: batch {shapes.batch}, N {shapes.seq_len}, R {shapes.negatives}, D {shapes.dim}, "
        f"{shapes.num_items - 1} items, HSTU {shapes.blocks} blocks x {shapes.heads} heads x "
        f"{shapes.head_dim}/{shapes.head_dim}; MoL {'x'.join(map(str, shapes.mol))} (query MLP "
        f"{shapes.mol_hidden}, gating {shapes.gating_hidden}, one uid component); history lengths "
        f"{'all N' if report['full_length'] else 'uniform in [min(20, N), N]'} (M = supervised positions). "
        f"Step = forward + backward + AdamW (`RetrievalModule.training_loss`: one head call over "
        f"[positive | R negatives]); {report['warmup']} warm-up, {report['iters']} timed steps.",
        "",
    ]
    if report.get("note"):
        lines += [report["note"], ""]
    if not rows:
        lines += [
            "**No measurement of the current code in this file.** Run the command above on the GPU.",
            "",
        ]
        return "\n".join(lines)
    failed = [row for row in rows if "error" in row]
    rows = [row for row in rows if "error" not in row]
    counted = bool(rows) and "forward_ops" in rows[0]
    header = (
        "| head | precision | step | M | step ms (mean ± std) | x dot (same precision, step) | "
        "speed-up over eager | peak GiB |"
    )
    lines += [
        header + (" ops fwd / bwd / optimizer (CPU profiler) |" if counted else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if counted else ""),
    ]
    for row, ratio, speedup in zip(rows, _ratio_cells(rows), _speedup_cells(rows), strict=True):
        line = (
            f"| {row['head']} | {row['precision']} | {_variant(row)} | {row['M']} | "
            f"{row['mean_ms']:.2f} ± {row['std_ms']:.2f} | {ratio} | {speedup} | {row['peak_gib']:.2f} |"
        )
        if counted:
            line += f" {row['forward_ops']} / {row['backward_ops']} / {row['optimizer_ops']} |"
        lines.append(line)
    lines += _profile_lines(rows)
    if failed:
        lines += ["", "Rows that did not run:"]
        lines += [f"- {row['head']} / {row['precision']} / {_variant(row)}: {row['error']}" for row in failed]
    gpu = not report["tiny"] and report["device_name"] != "cpu"
    # against the fastest dot-product step of the run (any precision or step variant): a MoL configuration
    # does not meet the bar by being compared with a dot step that its own precision slowed down. Probes
    # (the whole step replayed from a CUDA graph, the head under one torch.compile: no training run uses them
    # yet) are compared with the dot step of their own variant, on a line of their own.
    trainable = [row for row in rows if not _is_probe(row)]
    dots = [row["mean_ms"] for row in trainable if row["head"] == "dot"]
    fastest = min(dots) if dots else float("nan")
    ratios = [
        (f"{row['head']} {row['precision']} {_variant(row)}", round(row["mean_ms"] / fastest, 2))
        for row in trainable
        if row["head"].startswith("mol") and dots
    ]
    met = [name for name, ratio in ratios if ratio <= 1.5]
    listed = ", ".join(f"{name} {ratio}" for name, ratio in ratios)
    verdict = (
        (f"met by {', '.join(met)}" if met else "not met")
        + f" (MoL / the fastest dot step, {fastest:.2f} ms: {listed})"
        if gpu
        else "not measured: CPU or tiny shapes say nothing about it"
    )
    lines += [
        "",
        f"Acceptance (issue 13, item 4: MoL step <= 1.5x the dot-product step on one GPU): {verdict}.",
        "",
    ]
    probes = _probe_ratios(rows)
    if probes and gpu:
        lines += [
            f"Probes, not training configurations (MoL / dot of the same precision and variant): {probes}.",
            "",
        ]
    return "\n".join(lines)


def _is_probe(row: dict[str, Any]) -> bool:
    """A benchmark-only configuration: the step replayed from a CUDA graph, or the head under one compile."""
    return _variant(row) == "captured" or row["head"] == "mol_compiled_head"


def _probe_ratios(rows: Sequence[dict[str, Any]]) -> str:
    """``head precision variant ratio`` of each MoL probe row against the dot row of its precision and variant
    (the eager dot row for a compiled-head row)."""
    dot = {(row["precision"], _variant(row)): row["mean_ms"] for row in rows if row["head"] == "dot"}
    cells = []
    for row in rows:
        base = dot.get((row["precision"], _variant(row)))
        if _is_probe(row) and row["head"] != "dot" and base:
            cells.append(f"{row['head']} {row['precision']} {_variant(row)} {row['mean_ms'] / base:.2f}")
    return ", ".join(cells)
