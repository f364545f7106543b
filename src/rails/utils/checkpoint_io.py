"""Temporary: moved to rails.runs.checkpoints; removed at the end of #15 (``scripts/bench_topk.py`` imports it)."""

from rails.runs.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    check_state_dict_matches,
    load_checkpoint_file,
)

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "check_state_dict_matches",
    "load_checkpoint_file",
]
