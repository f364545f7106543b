"""RNGState: store every process's random-number-generator state in checkpoints for exact resume.

Lightning checkpoints hold model, optimiser, scheduler, loop and loader state but not the RNG streams that
drive dropout and negative sampling. This callback gathers the python / numpy / torch (CPU and CUDA) states
of every rank when a checkpoint is written and, after a restore, puts them back right before the next
training batch (so nothing that runs between the restore and that batch can shift the streams).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain containers (loadable with ``weights_only=True``)."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": [name, np_keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(Callback):
    """Save the RNG state of every rank in checkpoints and restore it at the first batch after resuming."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[dict[str, Any]] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = capture_rng_state()
        states = [state]
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, state)
            states = gathered
        checkpoint["rails_rng_states"] = states

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("rails_rng_states")
        if not states:
            rank_zero_warn("checkpoint has no RNG states (not written with RNGState): resume is not exact")
            return
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"checkpoint holds RNG states of {len(states)} processes, this run has {trainer.world_size}: "
                "resume is not bit-exact"
            )
        self._pending = [states[trainer.global_rank % len(states)]]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending:
            restore_rng_state(self._pending[0])
            self._pending = None
