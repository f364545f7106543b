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


def tile_loop(
    instructions: list[Instruction], labels: dict[str, int]
) -> tuple[list[Instruction], list[Instruction]]:
    """(what every tile runs, the merge branch) of the outermost loop: the longest backward branch's body split
    at the longest forward branch inside it.

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
    skips = [
        (at, labels[ins.target])
        for at in range(head, end)
        if (ins := instructions[at]).target in labels and at < labels[ins.target] <= end
    ]
    if not skips:
        return instructions[head : end + 1], []
    branch, target = max(skips, key=lambda skip: skip[1] - skip[0])
    return instructions[head : branch + 1] + instructions[target : end + 1], instructions[branch + 1 : target]


def analyse(text: str, bq: int, bx: int, warps: int, items: list[int], batch: int, sms: int, clock_ghz: float
            ) -> dict[str, Any]:  # fmt: skip
    """Counts of one listing and the issue / MUFU bounds (ms) at each item count."""
    always, merge = tile_loop(*parse_sass(text))
    mufu = sum(ins.opcode == "MUFU" for ins in always)
    by_line = Counter(ins.source for ins in always)
    tiles = {n: math.ceil(batch / bq) * math.ceil(n / bx) for n in items}
    clock = clock_ghz * 1e9
    return {
        "block_q": bq, "block_x": bx, "num_warps": warps, "per_tile": len(always), "merge_branch": len(merge),
        "mufu_per_tile": mufu, "pairs_per_tile": bq * bx,
        "warp_instructions_per_pair": len(always) * warps / (bq * bx),
        "issue_bound_ms": {str(n): 1e3 * t * warps * len(always) / (SCHEDULERS_PER_SM * sms * clock)
                           for n, t in tiles.items()},
        "mufu_bound_ms": {str(n): 1e3 * t * warps * mufu * 32 / (MUFU_LANES_PER_SM * sms * clock)
                          for n, t in tiles.items()},
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
    bounds = " | ".join(f"issue / MUFU bound at {int(n):,} (ms)" for n in items)
    lines = [
        f"# Fused exact MoL top-k: SASS instructions per tile ({record['source']}, {record['setting']}, "
        f"H = {record['hidden']}, B = {record['batch']})",
        "",
        f"Written by `scripts/kernel_sass.py` ({record['date']}; command `python scripts/kernel_sass.py "
        f"{record['command']}`). Per warp and tile: instructions of the tile loop outside the running top-k merge "
        "(every tile) and inside it (tiles with a key above a query's k-th best). Bounds: every tile's always part "
        f"issued at one instruction per scheduler and clock, and its MUFU instructions at {MUFU_LANES_PER_SM} "
        f"lanes per SM and clock, on {record['sms']} SMs at {record['clock_ghz']} GHz; merges not counted. Static "
        "counts, not a profile.",
        "",
        f"| BQ | BX | warps | per tile | merge branch | MUFU per tile | warp instructions per pair | {bounds} |",
        "|---|---|---|---|---|---|---|" + "---|" * len(items),
    ]
    for row in record["rows"]:
        cells = " | ".join(
            f"{row['issue_bound_ms'][str(n)]:.2f} / {row['mufu_bound_ms'][str(n)]:.2f}" for n in items
        )
        lines.append(
            f"| {row['block_q']} | {row['block_x']} | {row['num_warps']} | {row['per_tile']} | "
            f"{row['merge_branch']} | {row['mufu_per_tile']} | {row['warp_instructions_per_pair']:.1f} | {cells} |"
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
            row = analyse(text, bq, bx, warps, args.items, args.batch, args.sms, args.clock_ghz)
        except ValueError as error:
            raise SystemExit(f"{args.sass_file or f'{bq}x{bx}x{warps}'}: {error}") from None
        rows.append(row)
        print(f"{bq}x{bx}x{warps}: {row['per_tile']} instructions per tile and warp ({row['mufu_per_tile']} MUFU), "
              f"merge branch {row['merge_branch']}")  # fmt: skip
    record = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": str(args.sass_file) if args.sass_file else f"sm_{args.arch} compile, Triton {triton_version()}",
        "command": " ".join(sys.argv[1:]), "setting": args.setting, "hidden": args.hidden, "batch": args.batch,
        "items": args.items, "sms": args.sms, "clock_ghz": args.clock_ghz, "one_pass": args.one_pass,
        "merge_tiles": args.merge_tiles, "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "kernel_sass.json", json.dumps(record, indent=1) + "\n")
    atomic_write(args.out / "kernel_sass.md", markdown(record))
    print(f"wrote {args.out}/kernel_sass.{{json,md}}")


if __name__ == "__main__":
    main()
