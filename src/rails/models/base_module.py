"""LearnedSimilarityModule: the LightningModule base shared by the sequential and the text retrieval modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class LearnedSimilarityModule(L.LightningModule):
    """What every rails LightningModule shares: optimizer/scheduler factories, weighted auxiliary losses and
    the resolved run config stored in checkpoints (``rails_config``, read by ``rails-eval``).

    Args:
        optimizer: partial optimizer, called with the parameters.
        scheduler: optional partial LR scheduler, stepped every optimizer step.
        aux_loss_weights: weight of each named auxiliary loss of the head (unknown names raise).
    """

    def __init__(
        self,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        aux_loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.aux_loss_weights = dict(aux_loss_weights or {})
        self.run_config: dict[str, Any] | None = None

    def weighted_total(
        self, main: Tensor, aux_losses: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """main + sum_name weight[name] * aux[name]; returns (total, named parts incl. ``sampled_softmax``)."""
        parts = {"sampled_softmax": main}
        total = main
        for name, value in aux_losses.items():
            if name not in self.aux_loss_weights:
                raise KeyError(f"auxiliary loss {name!r} has no weight in model.aux_loss_weights")
            parts[name] = value
            total = total + self.aux_loss_weights[name] * value
        return total, parts

    def log_losses(self, total: Tensor, parts: Mapping[str, Tensor], batch_size: int) -> None:
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        for name, value in parts.items():
            if name != "sampled_softmax":
                self.log(f"train/aux/{name}", value, batch_size=batch_size)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["rails_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_config = checkpoint.get("rails_config", self.run_config)
