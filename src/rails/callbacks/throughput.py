"""SequenceThroughput: training sequences per second (all ranks together) in the progress bar and loggers."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class SequenceThroughput(Callback):
    """Log ``train/seq_per_s``: sequences (users) per second over the last ``window`` batches, x world size.

    Args:
        window: batches in the moving window.
    """

    def __init__(self, window: int = 20) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"callbacks.throughput.window must be >= 1, got {window}")
        self.window = window
        self._times: deque[float] = deque(maxlen=window + 1)
        self._sizes: deque[int] = deque(maxlen=window)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._times.clear()
        self._sizes.clear()
        self._times.append(time.perf_counter())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._times:
            self._times.append(time.perf_counter())
            return
        self._times.append(time.perf_counter())
        self._sizes.append(len(batch) if hasattr(batch, "__len__") else 0)
        elapsed = self._times[-1] - self._times[0]
        if elapsed > 0:
            rate = sum(self._sizes) * trainer.world_size / elapsed
            pl_module.log(
                "train/seq_per_s", rate, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True
            )
