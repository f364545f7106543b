"""Per-tile instruction budget of the fused exact MoL top-k kernel, read from its SASS without a GPU.

Compiles ``rails.kernels.mol_topk_kernel.mol_topk_block_kernel`` ahead of time (scripts/kernel_registers.py's
compile: Triton's bundled ptxas), disassembles the cubin with the bundled ``nvdisasm -g`` (source lines kept),
finds the tile loop (the backward branch) and splits its body into what every tile runs and the running top-k
merge (the longest forward branch inside the loop, taken only by tiles whose keys beat a query's k-th best).
It counts the instructions each warp issues per tile, by source line and by opcode, and from them two lower
bounds on a search over N items for B queries, merges not counted (every tile runs the always part):

- issue: warp instructions / (4 schedulers per SM x SMs x clock), one instruction per scheduler and clock;
- MUFU: MUFU warp instructions x 32 lanes / (16 special-function lanes per SM x SMs x clock).

Static counts, not a profile: they say how much work a tile is, not how well the warps hide latency.

    python scripts/kernel_sass.py --configs 8x8x4 4x32x8 --one-pass --items 1000000 10000000 --out results/profiles
    python scripts/kernel_sass.py --configs 8x8x4 --sass-file listing.sass --out /tmp/x   # an `nvdisasm -g -c` text
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel_registers import add_compile_arguments, compile_kernel

from rails.kernels.mol_topk_blocks import items_per_split, next_pow2, splits_for

SCHEDULERS_PER_SM = 4
MUFU_LANES_PER_SM = 16
_LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_LABEL = re.compile(r"^\.(L_x_\d+):")
_INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)[^;]*;")
_TARGET = re.compile(r"`?\(?\.(L_x_\d+)\)?`?")


@dataclass(frozen=True)
class Instruction:
    """One SASS instruction: its opcode (no modifiers), the source line it came from, its branch target label."""

    opcode: str
    source: str
    target: str | None


def parse_sass(text: str) -> tuple[list[Instruction], dict[str, int]]:
    """``nvdisasm -g -c`` text -> instructions in address order and label -> index of the next instruction."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    source = "?"
    for raw in text.splitlines():
        if found := _LINE.search(raw):
            source = f"{Path(found.group(1)).name}:{found.group(2)}"
        elif found := _LABEL.match(raw.strip()):
            labels[found.group(1)] = len(instructions)
        elif found := _INSTRUCTION.match(raw):
            opcode = found.group(2)
            target = _TARGET.search(raw) if opcode == "BRA" else None
            instructions.append(Instruction(opcode, source, target.group(1) if target else None))
    return instructions, labels


def _longest_forward_branch(
    instructions: list[Instruction], labels: dict[str, int], low: int, high: int
) -> tuple[int, int] | None:
    """(branch index, target index) of the longest forward branch with both ends in [low, high]; None if none."""
    skips = [
        (at, labels[ins.target])
        for at in range(low, high)
        if (ins := instructions[at]).target in labels and at < labels[ins.target] <= high
    ]
    return max(skips, key=lambda skip: skip[1] - skip[0]) if skips else None


def tile_loop(instructions: list[Instruction], labels: dict[str, int]) -> dict[str, list[Instruction]]:
    """The outermost loop (the longest backward branch) in three parts: ``always`` (every tile), ``merge`` (the
    longest forward branch inside it: tiles with a key above the k-th best) without ``merge_inner`` (the longest
    forward branch inside that one: with ``merge_tiles`` > 1, the sort that runs once per parked group).

    Raises:
        ValueError: no backward branch (no loop).
    """
    loops = [
        (labels[ins.target], end)
        for end, ins in enumerate(instructions)
        if ins.target in labels and labels[ins.target] <= end
    ]
    if not loops:
        raise ValueError("no backward branch in the listing: no tile loop found")
    head, end = max(loops, key=lambda loop: loop[1] - loop[0])
    outer = _longest_forward_branch(instructions, labels, head, end)
    if outer is None:
        return {"always": instructions[head : end + 1], "merge": [], "merge_inner": []}
    branch, target = outer
    inner = _longest_forward_branch(instructions, labels, branch + 1, target)
    inner_range = range(inner[0] + 1, inner[1]) if inner else range(0)
    return {
        "always": instructions[head : branch + 1] + instructions[target : end + 1],
        "merge": [instructions[i] for i in range(branch + 1, target) if i not in inner_range],
        "merge_inner": [instructions[i] for i in inner_range],
    }


def merge_fraction(split_items: int, bq: int, bx: int, k: int) -> float:
    """Expected share of a split's tiles that merge, with scores in random order: item i of a split enters a
    query's running top-k with probability min(1, k / i), independently of the others (the top-k records of a
    random permutation), and a tile merges when one of its ``bq`` queries takes one of its ``bx`` items."""
    log_miss = [math.log1p(-min(1.0, k / i)) if i > k else -math.inf for i in range(1, split_items + 1)]
    tiles = [log_miss[t : t + bx] for t in range(0, split_items - bx + 1, bx)]
    return sum(1.0 - math.exp(bq * sum(tile)) for tile in tiles) / len(tiles)


def analyse(text: str, bq: int, bx: int, warps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Counts of one listing, and the issue / MUFU bounds (ms) at each of ``args.items``: of the always part, and
    with the expected merges (:func:`merge_fraction` at the kernel's default splits, or ``args.splits``)."""
    parts = tile_loop(*parse_sass(text))
    always, merge, inner = parts["always"], parts["merge"], parts["merge_inner"]
    slots = min(args.merge_tiles, max(1, next_pow2(args.k) // bx)) if args.one_pass else 1
    per_merge = len(merge) + len(inner) / slots
    mufu = sum(ins.opcode == "MUFU" for ins in always)
    clock = args.clock_ghz * 1e9
    issue, issue_merged, mufu_ms, fractions = {}, {}, {}, {}
    for n in args.items:
        splits = args.splits or splits_for(args.batch, n, args.sms)
        per_split = items_per_split(n, splits)
        tiles = math.ceil(args.batch / bq) * math.ceil(n / bx)
        fraction = merge_fraction(min(per_split, n), bq, bx, args.k)
        per_warp = 1e3 * tiles * warps / (SCHEDULERS_PER_SM * args.sms * clock)
        issue[str(n)] = per_warp * len(always)
        issue_merged[str(n)] = per_warp * (len(always) + fraction * per_merge)
        mufu_ms[str(n)] = 1e3 * tiles * warps * mufu * 32 / (MUFU_LANES_PER_SM * args.sms * clock)
        fractions[str(n)] = {"splits": splits, "merge_fraction": fraction}
    by_line = Counter(ins.source for ins in always)
    return {
        "block_q": bq, "block_x": bx, "num_warps": warps, "per_tile": len(always), "merge_branch": len(merge),
        "merge_inner": len(inner), "slots": slots, "per_merge": per_merge, "mufu_per_tile": mufu,
        "pairs_per_tile": bq * bx, "warp_instructions_per_pair": len(always) * warps / (bq * bx),
        "issue_bound_ms": issue, "issue_bound_with_merges_ms": issue_merged, "mufu_bound_ms": mufu_ms,
        "merges": fractions,
        "lines": [{"line": line, "instructions": count,
                   "opcodes": dict(Counter(i.opcode for i in always if i.source == line).most_common(5))}
                  for line, count in by_line.most_common(12)],
        "opcodes": dict(Counter(ins.opcode for ins in always).most_common(12)),
    }  # fmt: skip


def disassemble(cubin: bytes) -> str:
    """``nvdisasm -g -c`` of a cubin with the nvdisasm bundled with Triton."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run(
            [str(tool), "-g", "-c", str(path)], capture_output=True, text=True, check=True
        ).stdout


def triton_version() -> str:
    """The installed Triton's version (the compiler of the listing)."""
    import triton

    return triton.__version__


def markdown(record: dict[str, Any]) -> str:
    """The report of :func:`main`'s record."""
    items = record["items"]
    bounds = " | ".join(
        f"{int(n):,} items: merge share (splits) | issue / + merges / MUFU (ms)" for n in items
    )
    lines = [
        f"# Fused exact MoL top-k: SASS instructions per tile ({record['source']}, {record['setting']}, "
        f"H = {record['hidden']}, B = {record['batch']}, merge_tiles {record['merge_tiles']}"
        + (
            f", a tile = a loop step of {record['step_tiles']} tiles: BX is their items)"
            if record["step_tiles"] > 1
            else ")"
        ),
        "",
        f"Written by `scripts/kernel_sass.py` ({record['date']}; command `python scripts/kernel_sass.py "
        f"{record['command']}`). Per warp and tile: instructions of the tile loop outside the running top-k merge "
        "(every tile) and per merged tile (the merge branch, its inner sort counted once per parked group). Merge "
        "share: the expected share of tiles that merge with scores in random order (item i of a split enters a "
        "query's top-k with probability min(1, k / i)). Bounds: instructions issued at one per scheduler and clock "
        f"(the always part, then with the expected merges), MUFU instructions at {MUFU_LANES_PER_SM} lanes per SM "
        f"and clock, on {record['sms']} SMs at {record['clock_ghz']} GHz. Static counts, not a profile.",
        "",
        f"| BQ | BX | warps | per tile | per merged tile | MUFU per tile | warp instructions per pair | {bounds} |",
        "|---|---|---|---|---|---|---|" + "---|---|" * len(items),
    ]
    for row in record["rows"]:
        cells = " | ".join(
            f"{row['merges'][str(n)]['merge_fraction']:.2f} ({row['merges'][str(n)]['splits']}) | "
            f"{row['issue_bound_ms'][str(n)]:.2f} / {row['issue_bound_with_merges_ms'][str(n)]:.2f} / "
            f"{row['mufu_bound_ms'][str(n)]:.2f}"
            for n in items
        )
        lines.append(
            f"| {row['block_q']} | {row['block_x']} | {row['num_warps']} | {row['per_tile']} | "
            f"{row['per_merge']:.0f} | {row['mufu_per_tile']} | {row['warp_instructions_per_pair']:.1f} | {cells} |"
        )
    for row in record["rows"]:
        lines += ["", f"Source lines of the always part, {row['block_q']}x{row['block_x']}x{row['num_warps']}:", "",
                  "| source line | instructions | opcodes |", "|---|---|---|"]  # fmt: skip
        for entry in row["lines"]:
            opcodes = ", ".join(f"{op} {n}" for op, n in entry["opcodes"].items())
            lines.append(f"| `{entry['line']}` | {entry['instructions']} | {opcodes} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_compile_arguments(parser)
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch", type=int, default=32, help="queries B")
    parser.add_argument("--sms", type=int, default=132, help="SMs of the GPU (H100 SXM / H200: 132)")
    parser.add_argument("--clock-ghz", type=float, default=1.98, help="SM clock (H200 boost: 1.98)")
    parser.add_argument(
        "--splits", type=int, help="corpus splits of the merge estimate (default: the kernel's own choice)"
    )
    parser.add_argument(
        "--sass-file", type=Path, help="analyse this nvdisasm -g -c listing (one --configs entry)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/profiles"))
    args = parser.parse_args()
    if args.sass_file is not None and len(args.configs) != 1:
        raise SystemExit("--sass-file takes exactly one --configs entry (the launch shape of that listing)")
    from rails.io import atomic_write

    rows = []
    for bq, bx, warps, chunk in args.configs:
        if args.sass_file is not None:
            try:
                text = args.sass_file.read_text()
            except OSError as error:
                raise SystemExit(f"--sass-file {args.sass_file}: {error}") from None
        else:
            text = disassemble(compile_kernel(args, bq, bx, warps, chunk)[0].asm["cubin"])
        try:
            # a loop step of STEP_TILES tiles counts as one tile of their items (its pairs, merges and slots)
            row = analyse(text, bq, bx * args.step_tiles, warps, args)
        except ValueError as error:
            raise SystemExit(f"{args.sass_file or f'{bq}x{bx}x{warps}'}: {error}") from None
        rows.append(row)
        print(f"{bq}x{bx}x{warps}: {row['per_tile']} instructions per tile and warp ({row['mufu_per_tile']} MUFU), "
              f"{row['per_merge']:.0f} per merged tile")  # fmt: skip
    record = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": str(args.sass_file) if args.sass_file else f"sm_{args.arch} compile, Triton {triton_version()}",
        "command": " ".join(sys.argv[1:]), "setting": args.setting, "hidden": args.hidden, "batch": args.batch,
        "items": args.items, "sms": args.sms, "clock_ghz": args.clock_ghz, "one_pass": args.one_pass,
        "merge_tiles": args.merge_tiles, "step_tiles": args.step_tiles, "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "kernel_sass.json", json.dumps(record, indent=1) + "\n")
    atomic_write(args.out / "kernel_sass.md", markdown(record))
    print(f"wrote {args.out}/kernel_sass.{{json,md}}")


if __name__ == "__main__":
    main()
