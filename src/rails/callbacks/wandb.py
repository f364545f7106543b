"""WandbExtras: what the W&B logger does not log by itself (index recall/latency tables, checkpoint artifacts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

_INDEX_METRIC = re.compile(r"(recall|latency)", re.IGNORECASE)


def index_rows(metrics: dict[str, float]) -> tuple[list[str], list[list[Any]]]:
    """Group ``<split>/<index>/<name>`` metrics that mention recall or latency into table rows.

    Returns:
        (columns, rows): columns ``split, index, <metric names...>``; one row per (split, index).
    """
    grouped: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) < 2 or not _INDEX_METRIC.search(parts[-1]):
            continue
        split = parts[0]
        index = "/".join(parts[1:-1]) or "-"
        grouped.setdefault((split, index), {})[parts[-1]] = float(value)
    names = sorted({name for values in grouped.values() for name in values})
    rows = [
        [split, index, *(values.get(n) for n in names)] for (split, index), values in sorted(grouped.items())
    ]
    return ["split", "index", *names], rows


class WandbExtras(Callback):
    """Log the retrieval indexes' recall-vs-latency table and (optionally) checkpoints to W&B.

    Does nothing when the trainer has no ``WandbLogger``. The table holds every logged metric whose name
    contains ``recall`` or ``latency`` (e.g. ``val/mol_avg/recall@100``, ``val/mol_avg/latency_ms``),
    one row per split and index; it is skipped when there are none.

    Args:
        log_checkpoints: at the end of fit, log the best and last checkpoints as one ``model`` artifact
            (aliases ``best`` / ``last``); works offline (uploaded by ``wandb sync``).
    """

    def __init__(self, log_checkpoints: bool = False) -> None:
        super().__init__()
        self.log_checkpoints = log_checkpoints

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    @rank_zero_only
    def _log_table(self, trainer: L.Trainer, stage: str) -> None:
        logger = self._wandb(trainer)
        if logger is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        columns, rows = index_rows(metrics)
        if not rows:
            return
        import wandb

        logger.experiment.log(
            {
                f"{stage}/retrieval_indexes": wandb.Table(columns=columns, data=rows),
                "trainer/global_step": trainer.global_step,
            }
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_table(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_table(trainer, "test")

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or not self.log_checkpoints:
            return
        import wandb

        files: dict[str, Path] = {}
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            if callback.monitor is not None and callback.best_model_path:
                files["best"] = Path(callback.best_model_path)
            for path in (callback.last_model_path, callback.best_model_path):
                if path and Path(path).name.startswith("last"):
                    files["last"] = Path(path)
        files = {alias: path for alias, path in files.items() if path.is_file()}
        if not files:
            return
        run = logger.experiment
        artifact = wandb.Artifact(
            f"model-{run.id}", type="model", metadata={"global_step": trainer.global_step}
        )
        for path in sorted(set(files.values())):
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact, aliases=sorted(files))
