"""Copy rails-train checkpoints without their training state, for evaluation and the top-k benchmark.

    python scripts/strip_checkpoint.py RUN/checkpoints/epoch_029.ckpt OUT.ckpt

The copy keeps the weights and the run's config (``rails-eval`` and ``scripts/bench_topk.py --checkpoint`` read
it as the original) and drops the optimizer, scheduler, loop, callback and RNG states (with Adam most of the file),
so trained models fit the device tool's 16 MiB per returned file and travel to a later session's
GPU call. It cannot resume a training (rails-train refuses it by name). The write is atomic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rails.runs.checkpoints import CheckpointError, write_inference_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a rails-train checkpoint (.ckpt)")
    parser.add_argument("destination", type=Path, help="where the inference-only copy goes")
    args = parser.parse_args()
    try:
        write_inference_checkpoint(args.source, args.destination)
    except (CheckpointError, FileNotFoundError) as error:
        raise SystemExit(f"strip_checkpoint: {error}") from None
    before, after = args.source.stat().st_size, args.destination.stat().st_size
    print(f"{args.source} ({before / 2**20:.1f} MiB) -> {args.destination} ({after / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
