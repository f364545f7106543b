"""EpochTimer: wall seconds of every training epoch (validation excluded) and the users each rank evaluated.

Optional (not in ``callbacks=default``); ``scripts/bench_ddp.py`` adds it with
``++callbacks.epoch_timer._target_=rails.callbacks.epoch_timer.EpochTimer``. Every rank writes
``<dirpath>/epoch_timer/rank<r>.json`` (atomically, after each training epoch and each evaluation):

- ``train_epoch_s``: per epoch, seconds from the start of the epoch to the start of its validation (or to the
  epoch end when it has none); CUDA is synchronised at both ends, so queued kernels count. (Lightning runs
  the epoch-end validation before ``on_train_epoch_end``.)
- ``eval``: per stage (``val``, ``test``), the sorted user ids of the latest evaluation pass on this rank, its
  batch count and seconds (``on_*_start`` to ``on_*_end``, all evaluator work included): the evidence that
  distributed evaluation was sharded (disjoint ids over ranks).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from rails.io import atomic_write


def _now(pl_module: L.LightningModule) -> float:
    """``time.perf_counter()`` after the module's CUDA device finished its queued work."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
    return time.perf_counter()


class EpochTimer(Callback):
    """Record training-epoch wall seconds and the users evaluated by this rank, one JSON file per rank.

    Args:
        dirpath: folder for ``epoch_timer/rank<r>.json``; None = the trainer's ``default_root_dir``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        super().__init__()
        self.dirpath = dirpath
        self.train_epoch_s: list[float] = []
        self.eval: dict[str, dict[str, Any]] = {}
        self._epoch_start: float | None = None
        self._eval_start: float | None = None
        self._eval_users: list[int] = []
        self._eval_batches = 0

    def path(self, trainer: L.Trainer) -> Path:
        """The JSON file of this rank."""
        root = Path(self.dirpath or trainer.default_root_dir)
        return root / "epoch_timer" / f"rank{trainer.global_rank}.json"

    def _write(self, trainer: L.Trainer) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "train_epoch_s": self.train_epoch_s,
            "eval": self.eval,
        }
        path = self.path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record) + "\n")

    def _close_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start is None:
            return
        self.train_epoch_s.append(_now(pl_module) - self._epoch_start)
        self._epoch_start = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = _now(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch(trainer, pl_module)  # no-op when validation already closed it
        self._write(trainer)

    def _start_eval(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch(
            trainer, pl_module
        )  # validation inside fit: the training part of the epoch ends here
        self._eval_users = []
        self._eval_batches = 0
        self._eval_start = _now(pl_module)

    def _record_batch(self, batch: Any) -> None:
        users = getattr(batch, "user_ids", None)
        if users is not None:
            self._eval_users.extend(int(u) for u in users.reshape(-1).tolist())
        self._eval_batches += 1

    def _end_eval(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking or self._eval_start is None:
            return
        self.eval[stage] = {
            "seconds": _now(pl_module) - self._eval_start,
            "batches": self._eval_batches,
            "users": sorted(self._eval_users),
        }
        self._eval_start = None
        self._write(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_eval(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_eval(trainer, pl_module)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._record_batch(batch)

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._record_batch(batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_eval(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_eval(trainer, pl_module, "test")
