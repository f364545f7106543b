"""Registers, spills and register-bound occupancy of the fused exact MoL top-k kernel, without a GPU.

Compiles ``rails.kernels.mol_topk_kernel.mol_topk_block_kernel`` ahead of time for a CUDA architecture with
Triton's own toolchain (its bundled ``ptxas``; no driver, no device) and reads each cubin's resource usage with
the bundled ``cuobjdump -res-usage``. Per launch shape (queries per program x items per tile x warps, gating
hidden units per step): registers per thread, spill stack bytes and how many programs of that shape fit one SM
by its 64 K registers. A way to look for shapes that leave room for more than one program per SM before
spending GPU time on timing them (``scripts/profile_fused_exact.py --blocks ... --hidden-chunks ...``).

    python scripts/kernel_registers.py --configs 4x32x8 8x16x8:32 16x8x8:16 --out results/profiles
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rails.kernels.mol_topk_blocks import parse_launch

REGISTERS_PER_SM = 65536  # sm_80 / sm_90
MAX_THREADS_PER_SM = 2048
# The kernel's tensor and scalar arguments (bf16 item state, the search's two-pass form); constexprs are set below.
POINTERS = {"G": "*bf16", "IG": "*bf16", "F": "*bf16", "QG": "*fp32", "W1": "*bf16", "B1": "*fp32", "W2": "*bf16",
            "B2": "*fp32", "EXCL": "*i32", "OUT": "*i64", "THR": "*i64", "COUNT": "*i32", "CAND": "*i64"}  # fmt: skip
FLOATS = {"inv_tau"}


def parse_config(text: str) -> tuple[int, int, int, int | None]:
    """``BQxBXxWARPS`` or ``BQxBXxWARPS:HIDDEN_CHUNK`` -> (BQ, BX, warps, chunk or None)."""
    try:
        bq, bx, warps, chunk = parse_launch(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--configs {err}") from err
    if warps is None:
        raise argparse.ArgumentTypeError(
            f"--configs {text!r} names no warp count: BQxBXxWARPS[:HIDDEN_CHUNK]"
        )
    return bq, bx, warps, chunk


def signature(kernel: Any) -> dict[str, str]:
    """Triton type strings of the kernel's arguments ("constexpr" for compile-time ones)."""
    types = {}
    for param in kernel.params:
        if param.is_constexpr:
            types[param.name] = "constexpr"
        elif param.name in POINTERS:
            types[param.name] = POINTERS[param.name]
        elif param.name in FLOATS:
            types[param.name] = "fp32"
        elif param.name.startswith(("num_", "stride_")) or param.name in ("items_per_split", "k", "capacity",
                                                                          "batch_bucket"):  # fmt: skip
            types[param.name] = "i32"
        else:
            raise SystemExit(
                f"kernel_registers.py: no type for kernel argument {param.name!r} (the kernel changed)"
            )
    return types


def launch_divisible(pq: int, px: int, dim: int) -> list[str]:
    """The arguments a launch passes as multiples of 16, which Triton's JIT specialises on (``tt.divisibility``):
    every pointer (fresh torch allocations are 16-byte aligned) and the row strides of the item components
    (P_X * d) and of the item gate (P_Q * P_X) when they are. Without them the compile would assume unaligned
    rows and load the item tile element by element, which no launch does. Counts (items, queries, split length)
    are left unspecialised, as are the arguments a launch passes as 1 (which Triton turns into constants)."""
    strides = {"stride_g": px * dim, "stride_ig": pq * px}
    return [*POINTERS, *(name for name, value in strides.items() if value % 16 == 0)]


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`compile_kernel` (shared with scripts/kernel_sass.py)."""
    parser.add_argument(
        "--configs", nargs="+", type=parse_config, required=True, help="BQxBXxWARPS[:HIDDEN_CHUNK]"
    )
    parser.add_argument("--setting", default="8x4x64", help="P_Q x P_X x d_P")
    parser.add_argument("--hidden", type=int, default=128, help="gating MLP hidden width")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (H100 / H200)")
    parser.add_argument(
        "--one-pass", action="store_true", help="the running top-k instead of the two-pass emit"
    )
    parser.add_argument(
        "--merge-tiles",
        type=int,
        default=1,
        help="with --one-pass: merged tiles parked per sort of the running top-k (1: every tile sorted in)",
    )
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument(
        "--step-tiles", type=int, default=1, help="tiles scored per loop step as independent chains (1 or 2)"
    )
    parser.add_argument(
        "--maxnreg",
        type=int,
        default=None,
        help="registers per thread the compile may use (triton.Config(maxnreg=...); default: ptxas' choice, <= 255)",
    )


def compile_kernel(
    args: argparse.Namespace, bq: int, bx: int, warps: int, chunk: int | None
) -> tuple[Any, int]:
    """The kernel compiled ahead of time for ``args.arch`` at one launch shape: (Triton's compiled kernel, hidden
    units per step). No GPU is needed (Triton's bundled ptxas)."""
    os.environ.pop("TRITON_INTERPRET", None)  # a real compile, whatever the caller's environment
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from rails.kernels.mol_topk_blocks import block_valid, next_pow2
    from rails.kernels.mol_topk_kernel import mol_topk_block_kernel as kernel
    from rails.kernels.mol_topk_triton import pair_padding

    pq, px, dim = (int(v) for v in args.setting.split("x"))
    pqp, pxp = pair_padding(pq, px)
    h_pad, k_pad = next_pow2(args.hidden), next_pow2(args.k)
    if not block_valid(bq, bx, pqp, pxp, k_pad):
        raise SystemExit(
            f"--configs {bq}x{bx}: not a valid tile for {args.setting} (rails.kernels.mol_topk_blocks)"
        )
    h_chunk = min(chunk or h_pad, h_pad)
    constants = {
        "PQ": pq, "PX": px, "D": dim, "PQP": pqp, "PXP": pxp, "D_PAD": next_pow2(dim), "H_PAD": h_pad,
        "H_CHUNK": h_chunk, "K_PAD": k_pad, "E_BLOCK": 2, "HAS_EXCL": False, "PRUNE": False,
        "FAST_MATH": 2 if args.arch >= 90 else 1, "PRECISION": None, "UPCAST": False, "ABLATE": 0,
        "EMIT": not args.one_pass, "MERGE_TILES": args.merge_tiles, "STEP_TILES": args.step_tiles,
        "BQ": bq, "BX": bx,
    }  # fmt: skip
    names = [param.name for param in kernel.params]
    source = ASTSource(
        kernel,
        signature(kernel),
        constexprs={(names.index(n),): v for n, v in constants.items()},
        attrs={(names.index(n),): [["tt.divisibility", 16]] for n in launch_divisible(pq, px, dim)},
    )
    options = {"num_warps": warps, "num_stages": args.stages}
    if args.maxnreg:
        options["maxnreg"] = args.maxnreg
    return triton.compile(source, target=GPUTarget("cuda", args.arch, 32), options=options), h_chunk


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG / STACK / SHARED / LOCAL of one cubin, from the bundled ``cuobjdump -res-usage``."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run(
            [str(tool), "-res-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
    found = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text))
    if "REG" not in found:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text[-500:]}")
    return {key.lower(): int(value) for key, value in found.items()}


def programs_per_sm(registers: int, warps: int) -> int:
    """Programs of ``warps`` warps that fit one SM by registers (allocated per warp in units of 256) and threads."""
    per_warp = -(-registers * 32 // 256) * 256
    return max(0, min(REGISTERS_PER_SM // (per_warp * warps), MAX_THREADS_PER_SM // (32 * warps)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_compile_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("results/profiles"))
    args = parser.parse_args()
    import triton

    from rails.io import atomic_write

    rows = []
    for bq, bx, warps, chunk in args.configs:
        compiled, h_chunk = compile_kernel(args, bq, bx, warps, chunk)
        usage = resource_usage(compiled.asm["cubin"])
        rows.append({"block_q": bq, "block_x": bx, "num_warps": warps, "hidden_chunk": h_chunk, **usage,
                     "programs_per_sm": programs_per_sm(usage["reg"], warps)})  # fmt: skip
        print(f"{bq}x{bx}x{warps} hidden/step {h_chunk}: {usage['reg']} registers, {usage['stack']} B stack, "
              f"{rows[-1]['programs_per_sm']} programs per SM")  # fmt: skip
    record = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "triton": triton.__version__,
        "arch": args.arch, "setting": args.setting, "hidden": args.hidden, "k": args.k,
        "search": "one pass" if args.one_pass else "two-pass (emit)", "stages": args.stages,
        "maxnreg": args.maxnreg, "step_tiles": args.step_tiles, "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "kernel_registers.json", json.dumps(record, indent=1))
    lines = [
        f"# Fused exact MoL top-k: registers per launch shape (sm_{args.arch}, {args.setting}, H = {args.hidden})",
        "",
        f"Written by `scripts/kernel_registers.py` ({record['date']}, Triton {record['triton']}, compiled ahead of "
        f"time, no GPU; {record['search']} kernel, {args.stages} stages). Programs per SM: by the SM's 64 K "
        "registers and 2,048 threads only (shared memory and the scheduler may allow fewer).",
        "",
        f"Command: `python scripts/kernel_registers.py {' '.join(sys.argv[1:])}`",
        "",
        "| BQ | BX | warps | hidden per step | registers | spill stack (B) | programs per SM |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['block_q']} | {row['block_x']} | {row['num_warps']} | {row['hidden_chunk']} | {row['reg']} "
            f"| {row['stack']} | {row['programs_per_sm']} |"
        )
    atomic_write(args.out / "kernel_registers.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out}/kernel_registers.{{json,md}}")


if __name__ == "__main__":
    main()
